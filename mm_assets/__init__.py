"""mm_assets: Dagster definitions only, thin wrappers over mm_core."""
