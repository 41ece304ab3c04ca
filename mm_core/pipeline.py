"""The build's stages as plain functions over one shard: the library path.

Dagster assets (``mm_assets``) are thin wrappers over these functions, and the
same functions run in a plain loop (:func:`run_build`) for users without
Dagster and as the orchestration-overhead baseline. Every stage reads its
inputs from and writes its outputs to :class:`BuildPaths`, atomically, so a
stage can be re-run for one shard and replaces exactly its own files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mm_core.atomic import atomic_dir, atomic_path
from mm_core.config import BuildConfig
from mm_core.encodings import ShardEncodings, load_encodings, save_encodings


@dataclass(frozen=True)
class BuildPaths:
    """Where each stage of one build keeps its files."""

    root: Path

    @classmethod
    def of(cls, cfg: BuildConfig) -> BuildPaths:
        return cls(cfg.build_dir)

    @property
    def shards_dir(self) -> Path:
        return self.root / "samples"

    @property
    def shard_index(self) -> Path:
        """sample_id -> shard: keeps old samples in their shard when data is added."""
        return self.root / "shard_index.parquet"

    def shard(self, shard_id: str) -> Path:
        from mm_core.data.sharding import shard_path

        return shard_path(self.shards_dir, shard_id)

    def scores(self, shard_id: str) -> Path:
        return self.root / "quality" / f"{shard_id}.parquet"

    def accepted(self, shard_id: str) -> Path:
        return self.root / "filtered" / "accepted" / f"{shard_id}.parquet"

    def rejected(self, shard_id: str) -> Path:
        return self.root / "filtered" / "rejected" / f"{shard_id}.parquet"

    def encodings(self, modality: str, shard_id: str) -> Path:
        return self.root / "encodings" / modality / f"{shard_id}.safetensors"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def fused(self, shard_id: str) -> Path:
        return self.root / "fused" / f"{shard_id}.safetensors"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    def list_shards(self) -> list[str]:
        """Shard ids written by ingest, sorted."""
        from mm_core.data.sharding import list_shards

        return list_shards(self.shards_dir)


def write_table(df: pd.DataFrame | pa.Table, path: Path) -> Path:
    """Parquet, written to a temporary name and renamed into place."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


# ---------------------------------------------------------------- ingest
def iter_source_records(cfg: BuildConfig) -> Iterator[Any]:
    """Every record of every configured source (the "raw downloads")."""
    from mm_core.data import make_demo_dataset, read_source

    for src in cfg.sources:
        opts = dict(src)
        layout = opts.pop("layout")
        if layout == "demo":
            target = cfg.root / "raw" / "demo" / f"n{opts.get('n_samples', 200)}-seed{opts.get('seed', cfg.seed)}"
            spec = make_demo_dataset(
                target,
                n_samples=int(opts.pop("n_samples", 200)),
                seed=int(opts.pop("seed", cfg.seed)),
                **opts,
            )
            yield from read_source(**spec)
        else:
            root = cfg.resolve(opts.pop("root"))
            yield from read_source(layout, root, **opts)


def ingest(cfg: BuildConfig) -> list[str]:
    """Read all sources and (re)write the shard tables; returns the shard ids."""
    from mm_core.data import write_shards

    paths = BuildPaths.of(cfg)
    write_shards(iter_source_records(cfg), paths.shards_dir, cfg.shard_size, index_path=paths.shard_index)
    return paths.list_shards()


# ---------------------------------------------------------------- quality
def score_shard(cfg: BuildConfig, shard_id: str) -> pd.DataFrame:
    """Quality scores of every record of a shard, with the verdict and its reasons."""
    from mm_core.data import table_to_records
    from mm_core.quality import score_and_filter

    paths = BuildPaths.of(cfg)
    records = table_to_records(pq.read_table(paths.shard(shard_id)))
    accepted, rejected = score_and_filter(records, cfg.quality or None)
    accepted = accepted.assign(accepted=True, reasons=[[] for _ in range(len(accepted))])
    scores = pd.concat([accepted, rejected.assign(accepted=False)], ignore_index=True)
    write_table(scores, paths.scores(shard_id))
    return scores


def filter_shard(cfg: BuildConfig, shard_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a scored shard into the accepted and the rejected (with reasons) tables."""
    paths = BuildPaths.of(cfg)
    scores = pq.read_table(paths.scores(shard_id)).to_pandas()
    accepted = scores[scores["accepted"]].drop(columns=["accepted", "reasons"])
    rejected = scores[~scores["accepted"]].drop(columns=["accepted"])
    write_table(accepted, paths.accepted(shard_id))
    write_table(rejected, paths.rejected(shard_id))
    return accepted, rejected


# ---------------------------------------------------------------- encode
def encoder_options(cfg: BuildConfig, modality: str) -> dict[str, Any]:
    return dict(cfg.modalities.get(modality, {}))


def build_modalities(cfg: BuildConfig) -> list[str]:
    """Modalities of this build: those configured, else every registered one."""
    from mm_core.registry import available_modalities

    return sorted(cfg.modalities) if cfg.modalities else available_modalities()


def decode_all(decode: Any, raws: list[Any], *, workers: int = 0) -> list[Any]:
    """Decode raw items in input order; ``workers`` > 0 decodes in that many threads.

    Image and audio decoders (PIL, libsndfile) release the GIL, so threads
    overlap file reads and decoding with each other without pickling media.
    """
    if workers <= 0 or len(raws) < 2:
        return [decode(raw) for raw in raws]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mm-decode") as pool:
        return list(pool.map(decode, raws))


def encode_shard(cfg: BuildConfig, shard_id: str, modality: str) -> ShardEncodings:
    """Encode one modality of the accepted samples of a shard and cache it.

    An encoder that trains with the fusion model (``training.train_encoders``)
    also caches its preprocessed inputs; every modality records a content key
    per sample (identical raw items are one item to training and evaluation).
    """
    from mm_core.encoding import get_encoder
    from mm_core.registry import get
    from mm_core.training.inputs import codec_for, content_key, trains_encoder

    paths = BuildPaths.of(cfg)
    accepted = pq.read_table(paths.accepted(shard_id)).to_pandas()
    has = accepted[modality].notna() if modality in accepted else pd.Series(False, index=accepted.index)
    inline = f"{modality}__bytes"
    if inline in accepted:
        has = has | accepted[inline].notna()
    rows = accepted[has]
    spec = get(modality)
    encoder = get_encoder(modality, **encoder_options(cfg, modality))
    raws = [
        row[inline] if inline in rows and row.get(inline) is not None else row[modality] for _, row in rows.iterrows()
    ]
    items = decode_all(spec.decode, raws, workers=cfg.runtime.num_workers)
    rt = cfg.runtime
    if items:
        feats, mask = encoder.encode(items, batch_size=rt.batch_size, device=rt.device, precision=rt.precision)
    else:
        import torch

        feats, mask = torch.zeros(0, 1, encoder.output_dim), torch.zeros(0, 1, dtype=torch.bool)
    t = cfg.training
    codec = codec_for(encoder) if trains_encoder(t.train_encoders, modality, encoder, t.auto_max_params) else None
    enc = ShardEncodings(
        modality=modality,
        sample_ids=rows["sample_id"].tolist(),
        features=feats,
        mask=mask,
        encoder=encoder_provenance(encoder, cfg, modality),
        inputs=codec.pack(encoder, items) if codec is not None else {},
        codec=codec.name if codec is not None else "",
        content=[content_key(raw) for raw in raws],
    )
    save_encodings(enc, paths.encodings(modality, shard_id))
    return enc


def encoder_provenance(encoder: Any, cfg: BuildConfig, modality: str) -> dict[str, str]:
    return {
        "name": str(encoder_options(cfg, modality).get("model") or type(encoder).__name__),
        "class": type(encoder).__name__,
        "weights_id": encoder.weights_id(),
        "pretrained": str(bool(getattr(encoder, "pretrained", False))).lower(),
        "output_dim": str(encoder.output_dim),
    }


def encoder_dims(cfg: BuildConfig) -> dict[str, int]:
    from mm_core.encoding import get_encoder

    return {m: get_encoder(m, **encoder_options(cfg, m)).output_dim for m in build_modalities(cfg)}


# ---------------------------------------------------------------- fusion model
def ensure_fusion_model(cfg: BuildConfig, *, progress: bool = False) -> dict[str, Any]:
    """Write the build's model (trained when ``training.enabled``, else the checkpoint or a seeded init).

    With a holdout configured, the model is also measured on it against the
    untrained model and the baseline; the figures go to ``evaluation.json``
    and, summarised, to ``provenance.json`` (and so to the dataset manifest).
    """
    from mm_core.fuse import load_fusion_model
    from mm_core.training.publish import clean, evaluate_untrained, publish_model

    if cfg.training.enabled:
        return publish_model(cfg, progress=progress)
    paths = BuildPaths.of(cfg)
    model, info = load_fusion_model(encoder_dims(cfg), asdict(cfg.fusion), seed=cfg.seed)
    evaluation = evaluate_untrained(cfg, model) if cfg.evaluation.enabled else None
    with atomic_dir(paths.model_dir) as tmp:
        model.save_pretrained(tmp)
        if evaluation is not None:
            info["evaluation"] = {"models": evaluation["models"], "chance": evaluation["chance"]}
            (Path(tmp) / "evaluation.json").write_text(json.dumps(clean(evaluation), indent=2))
        (Path(tmp) / "provenance.json").write_text(json.dumps(clean(info), indent=2, sort_keys=True))
    return {**info, "path": str(paths.model_dir)}


def load_build_model(cfg: BuildConfig) -> tuple[Any, dict[str, Any]]:
    """The model written by :func:`ensure_fusion_model` (a ``FusionStack``), and its provenance."""
    from mm_core.training.model import FusionStack

    paths = BuildPaths.of(cfg)
    info = json.loads((paths.model_dir / "provenance.json").read_text())
    return FusionStack.from_pretrained(paths.model_dir).eval(), info


# ---------------------------------------------------------------- fuse + export
def load_shard_encodings(cfg: BuildConfig, shard_id: str) -> dict[str, ShardEncodings]:
    paths = BuildPaths.of(cfg)
    out = {}
    for m in build_modalities(cfg):
        p = paths.encodings(m, shard_id)
        if p.exists():
            out[m] = load_encodings(p)
    return out


def fuse_shard(cfg: BuildConfig, shard_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Fused vectors of a shard's accepted samples (written to the fused store).

    The model's trainable encoders run on their cached inputs here; their pooled
    vectors are stored beside the fused ones (``mm_core.fuse.load_fused_pooled``).
    """
    from mm_core.fuse import fuse_encodings, save_fused

    paths = BuildPaths.of(cfg)
    accepted = pq.read_table(paths.accepted(shard_id), columns=["sample_id"]).column(0).to_pylist()
    encodings = load_shard_encodings(cfg, shard_id)
    model, info = load_build_model(cfg)
    rt = cfg.runtime
    vectors, present, pooled = fuse_encodings(
        model,
        accepted,
        encodings,
        batch_size=max(rt.batch_size, 1),
        device=rt.device,
        precision=rt.precision,
        with_pooled=True,
    )
    save_fused(paths.fused(shard_id), accepted, vectors, present, sorted(encodings), info, pooled)
    return accepted, vectors, present


def run_build(cfg: BuildConfig, *, progress: bool = True) -> dict[str, Any]:
    """The whole lineage in a plain loop over shards (no Dagster)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    shards = ingest(cfg)
    modalities = build_modalities(cfg)
    for sid in tqdm(shards, desc="quality + encode", disable=not progress):
        score_shard(cfg, sid)
        filter_shard(cfg, sid)
        for m in modalities:
            encode_shard(cfg, sid, m)
    ensure_fusion_model(cfg)
    for sid in tqdm(shards, desc="fuse + export", disable=not progress):
        fuse_shard(cfg, sid)
        export_shard(cfg, sid)
    manifest = finalize_export(cfg)
    return {"shards": shards, "seconds": time.perf_counter() - t0, "manifest": manifest}


def _writer(cfg: BuildConfig, provenance: dict[str, Any] | None = None):
    from mm_core.export import ShardedWriter

    paths = BuildPaths.of(cfg)
    model_cfg = json.loads((paths.model_dir / "config.json").read_text())
    info = json.loads((paths.model_dir / "provenance.json").read_text())
    names = build_modalities(cfg)
    dims = encoder_dims(cfg)
    prov = provenance or {
        "encoders": {m: _encoder_record(cfg, m) for m in names},
        "fusion": {"config": model_cfg, **info},
    }
    notes = "" if info.get("trained") else "fusion model is untrained (seeded random init)"
    return ShardedWriter(
        paths.export_dir,
        formats=cfg.export_formats,
        modalities=names,
        dim=cfg.fusion.output_dim,
        modality_dims=dims,
        dataset_name=cfg.name,
        provenance=prov,
        trained=bool(info.get("trained")),
        notes=notes,
    )


def _encoder_record(cfg: BuildConfig, modality: str) -> dict[str, str]:
    from mm_core.encoding import get_encoder

    return encoder_provenance(get_encoder(modality, **encoder_options(cfg, modality)), cfg, modality)


def export_shard(cfg: BuildConfig, shard_id: str) -> dict[str, Any]:
    """Write one shard's records in every configured format (replacing an earlier export)."""
    from mm_core.fuse import load_fused, load_fused_pooled

    paths = BuildPaths.of(cfg)
    ids, vectors, present, names, _ = load_fused(paths.fused(shard_id))
    accepted = pq.read_table(paths.accepted(shard_id)).to_pandas().set_index("sample_id").loc[ids]
    encodings = load_shard_encodings(cfg, shard_id)
    dims = encoder_dims(cfg)
    modality_vectors = {}
    for m in build_modalities(cfg):
        out = np.zeros((len(ids), dims[m]), np.float32)
        enc = encodings.get(m)
        if enc is not None and enc.sample_ids:
            row = {sid: i for i, sid in enumerate(enc.sample_ids)}
            pooled = enc.pooled.numpy()
            hit = [(j, row[s]) for j, s in enumerate(ids) if s in row]
            if hit:
                dst, src = zip(*hit, strict=True)
                out[list(dst)] = pooled[list(src)]
        modality_vectors[m] = out
    # encoders trained with the fusion model: their vectors come from the trained weights
    modality_vectors.update(load_fused_pooled(paths.fused(shard_id)))
    mask = np.zeros((len(ids), len(build_modalities(cfg))), bool)
    order = build_modalities(cfg)
    for i, m in enumerate(names):
        mask[:, order.index(m)] = present[:, i]
    qcols = [c for c in accepted.columns if c.startswith("q_")]
    metadata = [
        {"source": src, "labels": _labels(lab)} for src, lab in zip(accepted["source"], accepted["labels"], strict=True)
    ]
    return _writer(cfg).write_shard(
        shard_id,
        ids,
        vectors,
        mask,
        modality_vectors=modality_vectors,
        metadata=metadata,
        quality=accepted[qcols].reset_index(drop=True) if qcols else None,
    )


def _labels(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def finalize_export(cfg: BuildConfig) -> Path:
    """Assemble ``manifest.json`` (the dataset card) from every exported shard."""
    _writer(cfg).close()
    return BuildPaths.of(cfg).export_dir / "manifest.json"
