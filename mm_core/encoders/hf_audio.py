"""transformers speech encoders: Wav2Vec2 / HuBERT (raw waveform) and the Whisper encoder (log-mel).

Every clip is mono 16 kHz and at most 30 s (``mm_core.modalities.audio``); a
batch is padded to its own longest clip, and the frame-level output mask comes
from the real lengths through the model's ``_get_feat_extract_output_lengths``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    PretrainedConfig,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)

from mm_core.encoders.base import ModalityEncoder
from mm_core.encoders.weights import (
    load_into,
    load_state_dict_file,
    resolve_hf_model,
    seeded,
    strip_prefix,
    torch_dtype,
)
from mm_core.errors import ConfigError, WeightsError
from mm_core.modalities.audio import MAX_SECONDS, TARGET_RATE, DecodedAudio, prepare_waveform

log = logging.getLogger(__name__)


def fallback_config() -> Wav2Vec2Config:
    """A small Wav2Vec2 (4 layers, width 256) for offline runs without pretrained weights.

    Layer-norm feature encoder, so padded batches are masked correctly.
    """
    return Wav2Vec2Config(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        conv_dim=(256,) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=64,
        num_conv_pos_embedding_groups=16,
    )


def default_feature_extractor(config: PretrainedConfig) -> Any:
    """The feature extractor a checkpoint without ``preprocessor_config.json`` would use."""
    if config.model_type == "whisper":
        return WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    layer_norm = getattr(config, "feat_extract_norm", "layer") == "layer"
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=TARGET_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=layer_norm,
    )


class HFAudioEncoder(ModalityEncoder):
    """Decoded audio -> frame features ``[B, S, D]`` with a mask of real frames.

    Wav2Vec2/HuBERT get the raw waveform; the attention mask goes to the model
    only when its feature extractor says the model was trained with one
    (``return_attention_mask``; group-norm models such as wav2vec2-base take
    zero padding without a mask, as their model card prescribes). The Whisper
    encoder only accepts a fixed 30 s log-mel window (its positional embedding
    has exactly ``max_source_positions`` entries), so its input is padded to 30
    s as that model requires, but the returned mask marks only the real frames
    and the features are cut to the batch's longest real clip.
    """

    modality_name = "audio"

    def __init__(
        self,
        model: str | os.PathLike[str] = "facebook/wav2vec2-base",
        weights: str | os.PathLike[str] | None = None,
        pretrained: bool | str = "auto",
        *,
        max_seconds: float = MAX_SECONDS,
        allow_download: bool = False,
        dtype: str = "float32",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if pretrained not in (True, False, "auto"):
            raise ConfigError(f"pretrained must be true, false or 'auto'; got {pretrained!r}")
        self.max_seconds = float(max_seconds)
        backbone, fe, self.pretrained, self.source = self._build(
            str(model), pretrained, allow_download=allow_download, dtype=torch_dtype(dtype), seed=seed
        )
        if weights is not None:
            state = load_state_dict_file(weights)
            prefix = f"{getattr(backbone, 'base_model_prefix', '')}."
            load_into(backbone, strip_prefix(state, (prefix, "model.")), source=str(weights))
            self.pretrained, self.source = True, str(weights)
        self.config = backbone.config
        self.is_whisper = self.config.model_type == "whisper"
        self.model = backbone.get_encoder() if self.is_whisper else backbone
        self.feature_extractor = fe
        self.sample_rate = int(getattr(fe, "sampling_rate", TARGET_RATE))
        self.pass_attention_mask = bool(getattr(fe, "return_attention_mask", False))
        if self.is_whisper:
            hop = int(fe.hop_length)
            self.whisper_samples = int(self.config.max_source_positions) * 2 * hop
            self.max_seconds = min(self.max_seconds, self.whisper_samples / self.sample_rate)
        self.min_samples = self._receptive_field()

    @staticmethod
    def _build(
        model: str, pretrained: bool | str, *, allow_download: bool, dtype: torch.dtype, seed: int | None
    ) -> tuple[torch.nn.Module, Any, bool, str]:
        try:
            path = resolve_hf_model(model, allow_download=allow_download)
        except WeightsError:
            if pretrained is True:
                raise
            log.warning(
                "audio model %r is not available locally: using a RANDOMLY initialised small Wav2Vec2 "
                "(pretrained=False). Pass model=/path/to/dir for real weights.",
                model,
            )
            config = fallback_config()
            with seeded(seed):
                backbone = AutoModel.from_config(config)
            return backbone, default_feature_extractor(config), False, "random:wav2vec2-small"
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        try:
            if pretrained is False:
                with seeded(seed):
                    backbone = AutoModel.from_config(config, trust_remote_code=False)
            else:
                backbone = AutoModel.from_pretrained(path, trust_remote_code=False, dtype=dtype)
        except Exception as exc:
            raise WeightsError(f"cannot load audio model from {path}: {exc}") from exc
        if (path / "preprocessor_config.json").is_file():
            fe = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=False)
        else:
            fe = default_feature_extractor(config)
        return backbone, fe, pretrained is not False, str(path)

    def _receptive_field(self) -> int:
        """Fewest samples that give one output frame (the batch is padded at least this far)."""
        kernels = getattr(self.config, "conv_kernel", None)
        strides = getattr(self.config, "conv_stride", None)
        if self.is_whisper or not kernels or not strides:
            return 1
        field, jump = 1, 1
        for k, s in zip(kernels, strides, strict=True):
            field += (k - 1) * jump
            jump *= s
        return field

    @property
    def output_dim(self) -> int:
        if self.is_whisper:
            return int(self.config.d_model)
        if getattr(self.config, "add_adapter", False):
            return int(self.config.output_hidden_size)
        return int(self.config.hidden_size)

    def item_length(self, item: DecodedAudio) -> int:
        return int(item.samples.shape[-1] * TARGET_RATE / item.sample_rate)

    def preprocess(self, items: Sequence[DecodedAudio]) -> dict[str, torch.Tensor]:
        waves = [prepare_waveform(a, self.sample_rate, self.max_seconds) for a in items]
        fe = self.feature_extractor
        if self.is_whisper:
            out = fe(
                waves,
                sampling_rate=self.sample_rate,
                padding="max_length",
                max_length=self.whisper_samples,
                truncation=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            return {"input_features": out["input_features"], "frame_lengths": out["attention_mask"].sum(-1)}
        out = fe(
            waves,
            sampling_rate=self.sample_rate,
            padding="longest",
            return_attention_mask=True,
            return_tensors="pt",
        )
        values, mask = out["input_values"], out["attention_mask"].long()
        short = self.min_samples - values.shape[-1]
        if short > 0:  # every clip shorter than one frame: pad so the conv stack still runs
            values = torch.nn.functional.pad(values, (0, short))
            mask = torch.nn.functional.pad(mask, (0, short))
        return {"input_values": values, "attention_mask": mask}

    def _output_lengths(self, lengths: torch.Tensor, n_in: int, n_out: int) -> torch.Tensor:
        fn = getattr(self.model, "_get_feat_extract_output_lengths", None)
        if fn is not None:
            return torch.as_tensor(fn(lengths), device=lengths.device).long()
        return torch.ceil(lengths.float() * n_out / max(n_in, 1)).long()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        frame_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.is_whisper:
            hidden = self.model(input_features).last_hidden_state
            out_len = self._output_lengths(frame_lengths, input_features.shape[-1], hidden.shape[1])
        else:
            model_mask = attention_mask if self.pass_attention_mask else None
            hidden = self.model(input_values, attention_mask=model_mask).last_hidden_state
            out_len = self._output_lengths(attention_mask.sum(-1), input_values.shape[-1], hidden.shape[1])
        out_len = out_len.clamp(max=hidden.shape[1])
        keep = max(int(out_len.max()), 1)
        hidden = hidden[:, :keep]
        mask = torch.arange(keep, device=hidden.device)[None, :] < out_len[:, None]
        return hidden, mask
