"""Safe weight resolution and loading, shared by every encoder.

Weights come from a local directory, a checkpoint file, or the local Hugging
Face cache. Nothing is downloaded unless the caller asks (``allow_download``),
so an offline machine fails fast with a message that says what to pass,
instead of hanging on network retries. Checkpoints load as safetensors, or
with ``torch.load(weights_only=True)``: a pickle that needs anything but
tensors is refused. ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from mm_core.errors import WeightsError

log = logging.getLogger(__name__)

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def local_path(name_or_path: str | os.PathLike[str] | None) -> Path | None:
    """``Path`` when the argument names an existing file or directory, else None."""
    if name_or_path is None:
        return None
    p = Path(os.path.expanduser(str(name_or_path)))
    return p if p.exists() else None


def hf_offline() -> bool:
    """True when HF_HUB_OFFLINE is set (read at call time, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_hf_model(name_or_path: str | os.PathLike[str], *, allow_download: bool = False) -> Path:
    """A local directory for a Hugging Face model: the path itself, or its hub-cache snapshot.

    Raises ``WeightsError`` when the name is neither a local directory nor in
    the cache (and downloading is not allowed or fails).
    """
    local = local_path(name_or_path)
    if local is not None:
        if not local.is_dir():
            raise WeightsError(f"{local} is a file; pass the model directory (config.json + weights)")
        return local
    from huggingface_hub import snapshot_download

    repo = str(name_or_path)
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as cached_exc:
        if not allow_download or hf_offline():
            raise WeightsError(
                f"model {repo!r} is not a local directory and not in the local Hugging Face cache "
                "(downloads are off). Pass a local directory (model=/path/to/model, saved with "
                "save_pretrained), or pre-fetch it with `huggingface-cli download` on a machine "
                "with network access, or set allow_download=True."
            ) from cached_exc
    try:
        return Path(snapshot_download(repo))
    except Exception as exc:
        raise WeightsError(f"could not download {repo!r}: {exc}. Pass a local directory instead.") from exc


def cached_hub_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """Path of the first of ``filenames`` present in the local HF cache for ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        try:
            found = try_to_load_from_cache(repo_id, name)
        except Exception:  # malformed repo id and the like: treat as not cached
            return None
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual ``{"state_dict"|"model"|"module": ...}`` wrappers."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise WeightsError("checkpoint holds no tensors (expected a state dict)")


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a checkpoint file safely: safetensors, or a pickle with ``weights_only=True``."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint file not found: {p}")
    if p.suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:
            raise WeightsError(f"cannot read safetensors file {p}: {exc}") from exc
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"refused to load {p}: it contains Python objects other than tensors, and only "
            "weights_only loading is allowed. Convert it to safetensors from a trusted environment."
        ) from exc
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {p}: {exc}") from exc
    return _unwrap(obj)


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for other files)."""
    if Path(path).suffix not in SAFE_SUFFIXES:
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise WeightsError(f"cannot read safetensors file {path}: {exc}") from exc


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    config: Mapping[str, object] | None = None,
) -> Path:
    """Write a state dict as safetensors atomically; ``config`` goes into the metadata as JSON."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        meta = {"config": json.dumps(dict(config))} if config is not None else None
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix (``"wav2vec2."``, ``"model."``, ``"bert."``) shared by every key."""
    for prefix in prefixes:
        if prefix and state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict`` that reports missing/unexpected keys as a ``WeightsError``."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise WeightsError(f"weights in {source} do not fit the model: {exc}") from exc
    if missing or unexpected:
        raise WeightsError(
            f"weights in {source} do not match the model: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Deterministic random initialisation without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def torch_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """``"float32"``/``"bfloat16"``/``"float16"`` (or a dtype) -> ``torch.dtype``."""
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        return name
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    dtype = getattr(torch, aliases.get(name, name), None)
    if not isinstance(dtype, torch.dtype):
        raise WeightsError(f"unknown dtype {name!r}")
    return dtype
