"""Blocking, partitioned asset checks: a failing shard stops its own downstream assets."""

import warnings

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from mm_assets.partitions import shards
from mm_core.config import BuildConfig
from mm_core.fuse import load_fused
from mm_core.pipeline import BuildPaths

REQUIRED_COLUMNS = ("sample_id", "source", "labels", "errors")


def _result(passed: bool, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(passed), severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


def shard_gate(asset: str, description: str):
    """A blocking, shard-partitioned asset check: failing it stops that shard's downstream assets."""
    return dg.asset_check(asset=asset, blocking=True, partitions_def=shards, description=description)


def read_fused(path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Ids, vectors, presence and modality names of one fused shard file."""
    return load_fused(path)[:4]


def build_checks(cfg: BuildConfig) -> list[dg.AssetChecksDefinition]:
    # Partitioned checks are a Dagster preview feature; they are what per-shard gates need.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def.*AssetCheckSpec")
    paths = BuildPaths.of(cfg)

    def row_counts(shard_id: str) -> tuple[int, int]:
        """Input and accepted row counts of a shard (from the Parquet footers)."""
        return pq.read_metadata(paths.shard(shard_id)).num_rows, pq.read_metadata(paths.accepted(shard_id)).num_rows

    @shard_gate("raw_samples", "Shard table has the record schema and unique sample ids.")
    def raw_schema(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        table = pq.read_table(paths.shard(context.partition_key))
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        ids = table.column("sample_id").to_pylist() if "sample_id" in table.column_names else []
        dups = len(ids) - len(set(ids))
        return _result(not missing and dups == 0, missing_columns=dg.MetadataValue.json(missing), duplicates=dups)

    @shard_gate("filtered_samples", "accepted + rejected == input rows; every rejection has a reason.")
    def row_accounting(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        sid = context.partition_key
        n_in, n_acc = row_counts(sid)
        rejected = pq.read_table(paths.rejected(sid), columns=["reasons"]).column(0).to_pylist()
        unexplained = sum(1 for r in rejected if not r)
        ok = n_in == n_acc + len(rejected) and unexplained == 0
        return _result(ok, input=n_in, accepted=n_acc, rejected=len(rejected), without_reason=unexplained)

    @shard_gate("filtered_samples", "Pass rate of the shard is above the configured floor (gates.min_pass_rate).")
    def pass_rate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        n_in, n_acc = row_counts(context.partition_key)
        rate = n_acc / n_in if n_in else 0.0
        floor = float(cfg.gate("min_pass_rate"))
        return _result(rate >= floor, pass_rate=round(rate, 4), floor=floor)

    @shard_gate("fused_embeddings", "No NaN/inf; dimension equals fusion.output_dim; norms in range; unique ids.")
    def vectors_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        ids, vectors, _, _ = read_fused(paths.fused(context.partition_key))
        finite = bool(np.isfinite(vectors).all())
        norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
        lo, hi = float(cfg.gate("norm_min")), float(cfg.gate("norm_max"))
        in_range = bool(((norms >= lo) & (norms <= hi)).all())
        dim_ok = vectors.ndim == 2 and vectors.shape[1] == cfg.fusion.output_dim
        dups = len(ids) - len(set(ids))
        return _result(
            finite and in_range and dim_ok and dups == 0 and len(ids) == len(vectors),
            finite=finite,
            dim=int(vectors.shape[1]) if vectors.ndim == 2 else -1,
            norm_min=float(norms.min()) if norms.size else 0.0,
            norm_max=float(norms.max()) if norms.size else 0.0,
            duplicates=dups,
        )

    @shard_gate("fused_embeddings", "Per-modality missing rates within gates.max_missing_rate(_by_modality).")
    def missing_modality_rates(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        _, _, present, names = read_fused(paths.fused(context.partition_key))
        rates = {m: float(1.0 - present[:, i].mean()) if len(present) else 1.0 for i, m in enumerate(names)}
        default = float(cfg.gate("max_missing_rate"))
        bounds = {m: float(cfg.gate("max_missing_rate_by_modality").get(m, default)) for m in names}
        over = {m: r for m, r in rates.items() if r > bounds[m]}
        none_present = int((~present.any(1)).sum()) if len(present) else 0
        return _result(
            not over and none_present == 0,
            missing_rate=dg.MetadataValue.json(rates),
            over_bound=dg.MetadataValue.json(over),
            samples_without_modality=none_present,
        )

    return [raw_schema, row_accounting, pass_rate, vectors_valid, missing_modality_rates]
