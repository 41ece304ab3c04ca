"""The platform as a user runs it: ``dagster-webserver`` + ``dagster-daemon``, driven through GraphQL.

Runs go through the queued run coordinator (dequeued by the daemon) and the
default run launcher, partition backfills through the daemon's backfill loop,
exactly as when a person clicks "Materialize" and "Backfill" in the UI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from mm_assets.cli import prepare_instance
from mm_core.config import BuildConfig
from mm_core.export import read_vectors
from mm_core.pipeline import BuildPaths
from tests.dagster_helpers import small_build

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
#: steps run in the run's own process: one model load per run instead of one per step subprocess
RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}
#: blocking checks per asset: every one must have passed for every shard
CHECKS = {
    "raw_samples": ["raw_schema"],
    "filtered_samples": ["row_accounting", "pass_rate"],
    "fused_embeddings": ["vectors_valid", "missing_modality_rates"],
}

LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { name partitionSets { name pipelineName } } } } } } } }"""
LAUNCH_RUN = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }"""
RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""
LAUNCH_BACKFILL = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status numPartitions partitionNames runs { runId status } } ... on Error { message } } }"""
RUNS = """{ runsOrError(limit: 100) { __typename ... on Runs { results { runId jobName status
  tags { key value } } } } }"""
CHECK_EXECUTIONS = """query($asset: AssetKeyInput!, $check: String!, $pk: String) {
  assetCheckExecutions(assetKey: $asset, checkName: $check, partition: $pk, limit: 10) {
    runId status partition evaluation { success severity partition } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the process group (the server, its code server, run workers); SIGKILL on timeout."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Platform:
    """A running webserver + daemon on a temporary instance serving one small build."""

    url: str
    home: Path
    cfg: BuildConfig
    location: str = ""
    repository: str = ""

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        resp.raise_for_status()
        body = resp.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    @property
    def repo_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository}

    def launch_job(self, job: str) -> str:
        params = {"selector": {**self.repo_selector, "jobName": job}, "runConfigData": RUN_CONFIG}
        out = self.gql(LAUNCH_RUN, p=params)["launchRun"]
        assert out["__typename"] == "LaunchRunSuccess", out
        return out["run"]["runId"]

    def wait_run(self, run_id: str, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.gql(RUN_STATUS, id=run_id)["runOrError"]["status"]
            if status in TERMINAL:
                return status
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} did not finish in {timeout} s")

    def run_job(self, job: str) -> str:
        return self.wait_run(self.launch_job(job))

    def backfill(self, job: str) -> str:
        """Backfill every partition of a partitioned job, as the UI's "Launch backfill" does."""
        selector = {"partitionSetName": f"{job}_partition_set", "repositorySelector": self.repo_selector}
        params = {"selector": selector, "allPartitions": True, "title": f"e2e {job}", "runConfigData": RUN_CONFIG}
        out = self.gql(LAUNCH_BACKFILL, p=params)["launchPartitionBackfill"]
        assert out["__typename"] == "LaunchBackfillSuccess", out
        return out["backfillId"]

    def backfill_state(self, backfill_id: str) -> dict[str, Any]:
        out = self.gql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
        assert out["__typename"] == "PartitionBackfill", out
        return out

    def wait_backfill_runs(self, backfill_id: str, timeout: float = 240.0) -> dict[str, Any]:
        """Wait until the daemon has submitted a run per partition and every run has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.backfill_state(backfill_id)
            runs = state["runs"]
            if len(runs) == state["numPartitions"] and all(r["status"] in TERMINAL for r in runs):
                return state
            time.sleep(1.0)
        raise TimeoutError(f"backfill {backfill_id} did not finish in {timeout} s: {state}")


def _wait_for_location(platform: Platform, procs: list[subprocess.Popen], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"{p.args[0]} exited with {p.returncode}"
        try:
            if requests.get(f"{platform.url}/server_info", timeout=5).ok:
                data = platform.gql(LOCATION_QUERY)["workspaceOrError"]
                entry = data["locationEntries"][0]
                last = entry["locationOrLoadError"]
                if last and last["__typename"] == "RepositoryLocation":
                    platform.location = entry["name"]
                    platform.repository = last["repositories"][0]["name"]
                    return
                assert not last or last["__typename"] != "PythonError", last["message"]
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"code location did not load in {timeout} s: {last}")


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    monkeypatch.delenv("MM_STORAGE_ROOT", raising=False)
    cfg_path, cfg = small_build(tmp_path, "e2e")
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    prepare_instance(cfg.root)  # the dagster.yaml `mm build` / `mm dev` use (SQLite, GPU pool limit)
    with (home / "dagster.yaml").open("a") as f:  # dequeue promptly: the test waits on every run
        f.write("run_queue:\n  dequeue_interval_seconds: 1\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "MM_CONFIG": str(cfg_path)}
    port = _free_port()
    workspace = str(REPO_ROOT / "workspace.yaml")
    commands = {
        "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
    }
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for name, cmd in commands.items():
            logs.append(log := (tmp_path / f"{name}.log").open("wb"))
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            procs.append(proc)
        plat = Platform(url=f"http://127.0.0.1:{port}", home=home, cfg=cfg)
        _wait_for_location(plat, procs)
        yield plat
    finally:
        for p in procs:
            _stop(p)
        for f in logs:
            f.close()


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def test_ui_workflow_ingest_backfill_train_backfill_manifest(platform: Platform) -> None:
    paths = BuildPaths.of(platform.cfg)

    # 1. ingest: source_index writes the shard tables and adds one dynamic partition per shard
    assert platform.run_job("ingest_sources") == "SUCCESS"
    shard_ids = paths.list_shards()
    assert len(shard_ids) == 2

    # 2. backfill every shard through quality and encodings (the daemon submits one run per shard)
    prepare_id = platform.backfill("prepare_shards")
    prepare = platform.wait_backfill_runs(prepare_id)
    assert sorted(prepare["partitionNames"]) == shard_ids
    assert [r["status"] for r in prepare["runs"]] == ["SUCCESS"] * 2

    # 3. the fusion model, then 4. fuse + export every shard, then 5. the dataset card
    assert platform.run_job("train_fusion") == "SUCCESS"
    finish_id = platform.backfill("finish_shards")
    finish = platform.wait_backfill_runs(finish_id)
    assert [r["status"] for r in finish["runs"]] == ["SUCCESS"] * 2
    assert platform.run_job("write_manifest") == "SUCCESS"

    # outputs: every format holds the same rows; the manifest accounts for them
    export = paths.export_dir
    ids, vectors, mask, modalities = read_vectors(export, "parquet")
    assert len(ids) == len(set(ids)) > 0
    assert vectors.shape == (len(ids), platform.cfg.fusion.output_dim) and np.isfinite(vectors).all()
    assert modalities == ["audio", "sensor", "text", "vision"] and mask.shape == (len(ids), 4)
    for fmt in ("npy", "h5", "safetensors"):
        other = read_vectors(export, fmt)
        assert other[0] == ids and np.array_equal(other[1], vectors) and np.array_equal(other[2], mask), fmt
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["total_rows"] == len(ids)
    assert sorted(manifest["shards"]) == shard_ids

    # asset checks: every blocking check ran once per shard, in a backfill run, and passed
    backfill_runs = {r["runId"] for r in prepare["runs"] + finish["runs"]}
    for asset, checks in CHECKS.items():
        for check in checks:
            for pk in shard_ids:
                execs = platform.gql(CHECK_EXECUTIONS, asset={"path": [asset]}, check=check, pk=pk)
                execs = execs["assetCheckExecutions"]
                assert [e["status"] for e in execs] == ["SUCCEEDED"], (asset, check, pk, execs)
                assert execs[0]["evaluation"]["success"] and execs[0]["evaluation"]["partition"] == pk
                assert execs[0]["runId"] in backfill_runs

    # run records: 7 runs, all SUCCESS; backfill runs carry their partition and backfill tags
    runs = platform.gql(RUNS)["runsOrError"]["results"]
    jobs = ["ingest_sources", "train_fusion", "write_manifest", *["prepare_shards", "finish_shards"] * 2]
    assert sorted(r["jobName"] for r in runs) == sorted(jobs)
    assert {r["status"] for r in runs} == {"SUCCESS"}
    for job, backfill_id in (("prepare_shards", prepare_id), ("finish_shards", finish_id)):
        tags = [_tags(r) for r in runs if r["jobName"] == job]
        assert sorted(t["dagster/partition"] for t in tags) == shard_ids
        assert {t["dagster/backfill"] for t in tags} == {backfill_id}
        assert all(t["dagster/partition_set"] == f"{job}_partition_set" for t in tags)
    # the daemon marks a backfill complete on its next tick (every 30 s) after the runs finished
    deadline = time.monotonic() + 45
    while platform.backfill_state(prepare_id)["status"] == "REQUESTED" and time.monotonic() < deadline:
        time.sleep(1.0)
    assert platform.backfill_state(prepare_id)["status"] == "COMPLETED_SUCCESS"
