"""``mm``: build a dataset through Dagster, or open the UI on it.

``mm build [CONFIG]`` materializes every partition of the lineage through the
same Dagster instance (under ``<storage_root>/dagster_home``) and definitions
that ``mm dev`` shows, so its runs appear in the UI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from mm_assets.config import DEMO_CONFIG

REPO_WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"


def prepare_instance(storage_root: Path) -> Path:
    """Create ``DAGSTER_HOME`` (dagster.yaml with the GPU pool limit, and its storage); returns it."""
    import torch

    home = Path(os.environ.get("DAGSTER_HOME") or storage_root / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    yaml_path = home / "dagster.yaml"
    if not yaml_path.exists():
        gpus = torch.cuda.device_count()
        yaml_path.write_text(
            "# Written by `mm`: SQLite storage in this folder; the 'gpu' pool admits one step per GPU\n"
            "# (one at a time on a CPU-only machine).\n"
            "concurrency:\n"
            "  pools:\n"
            f"    default_limit: {max(gpus, 1)}\n"
            "# The daemon gives back the pool slots of runs that ended without releasing them\n"
            "# (a run worker killed mid-step); `mm build` does the same for its own runs.\n"
            "run_monitoring:\n"
            "  enabled: true\n"
            "  free_slots_after_run_end_seconds: 60\n"
            "telemetry:\n"
            "  enabled: false\n"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    # Create the SQLite schema here, once: a webserver and a daemon started side by side on a
    # fresh home would both try to create it and one of them dies on "table already exists".
    with dg.DagsterInstance.from_config(str(home)):
        pass
    return home


def _use_config(config: str | None) -> Path:
    path = Path(config or DEMO_CONFIG).resolve()
    if not path.is_file():
        raise SystemExit(f"mm: config file not found: {path}")
    os.environ["MM_CONFIG"] = str(path)
    return path


def cmd_build(args: argparse.Namespace) -> int:
    """Materialize the whole lineage for every shard through Dagster."""
    path = _use_config(args.config)
    from mm_assets.config import build_config

    cfg = build_config()
    prepare_instance(cfg.root)
    from mm_assets.build import build_all

    t0 = time.perf_counter()
    result = build_all(cfg, progress=not args.quiet)
    print(f"config:    {path}")
    print(f"shards:    {len(result['shards'])} ({result['samples']} samples, {result['accepted']} accepted)")
    print(f"dataset:   {result['export_dir']}")
    print(f"manifest:  {result['manifest']}")
    print(f"dagster:   {os.environ['DAGSTER_HOME']} (open the UI with: mm dev {args.config or ''})".rstrip())
    print(f"time:      {time.perf_counter() - t0:.1f} s")
    return 0 if result["ok"] else 1


def cmd_dev(args: argparse.Namespace) -> int:
    """Start the Dagster UI and daemon on this build (binds to 127.0.0.1)."""
    _use_config(args.config)
    from mm_assets.config import build_config

    prepare_instance(build_config().root)
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(REPO_WORKSPACE),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    return subprocess.call(cmd)


def cmd_modalities(args: argparse.Namespace) -> int:
    """List registered modalities (built-in and plugins)."""
    from mm_core.registry import available_modalities, get

    for name in available_modalities():
        spec = get(name)
        print(f"{name:10s} {', '.join(spec.extensions) or '-':30s} {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="materialize every partition of the lineage through Dagster")
    p.add_argument("config", nargs="?", help="build YAML (default: the embedded demo)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("dev", help="open the Dagster UI (webserver + daemon) on a build")
    p.add_argument("config", nargs="?", help="build YAML (default: the embedded demo)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("modalities", help="list registered modalities, plugins included")
    p.set_defaults(func=cmd_modalities)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
