"""Blocking retrieval-quality check on the fusion model: fused embeddings wait until it passes.

The rule (``mm_core.training.evaluation.gate``): every configured floor of
``evaluation.floors`` holds; with none, held-out cross-modal recall@1 of each
retrieval pair is at least ``min_ratio_over_chance`` times chance and, for a
trained model, above the untrained model by more than ``min_gain_over_untrained``.
There is no check when the build names no held-out data (``evaluation.holdout``).
"""

import json

import dagster as dg

from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths


def _rows_md(rows: list[dict]) -> dg.MetadataValue:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"| {r['metric']} | {fmt(r['value'])} | {r['rule']} | {fmt(r['bound'])} | {'pass' if r['passed'] else 'FAIL'} |"
        for r in rows
    ]
    return dg.MetadataValue.md("| metric | value | rule | bound | |\n|---|---|---|---|---|\n" + "\n".join(lines))


def build_model_checks(cfg: BuildConfig) -> list[dg.AssetChecksDefinition]:
    """The retrieval-quality gate of ``fusion_model`` (empty without a holdout)."""
    if not cfg.evaluation.enabled:
        return []
    paths = BuildPaths.of(cfg)

    @dg.asset_check(
        asset="fusion_model",
        blocking=True,
        description="Held-out cross-modal retrieval: configured floors, or well above chance and above "
        "the untrained model (evaluation.* in the build config).",
    )
    def retrieval_quality(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        from mm_core.training.evaluation import gate

        result = json.loads((paths.model_dir / "evaluation.json").read_text())
        trained = "trained" in result.get("models", {})
        passed, rows = gate(result, cfg.evaluation, trained=trained)
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rules": _rows_md(rows),
                "failed": sum(not r["passed"] for r in rows),
                "trained": trained,
                "eval_samples": int(result.get("split", {}).get("evaluated", 0)),
            },
        )

    return [retrieval_quality]
