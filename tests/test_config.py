"""The build configuration: validation, path resolution, versions that track what matters."""

from __future__ import annotations

import pytest
import yaml

from mm_core.config import load_config
from mm_core.errors import ConfigError


def _write(tmp_path, data):
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_config_loads_and_root_follows_env(tmp_path, monkeypatch):
    from mm_assets.config import DEMO_CONFIG

    monkeypatch.setenv("MM_STORAGE_ROOT", str(tmp_path / "store"))
    cfg = load_config(DEMO_CONFIG)
    assert cfg.root == (tmp_path / "store").resolve()
    assert cfg.build_dir == cfg.root / "builds" / "demo"
    assert set(cfg.export_formats) == {"npy", "h5", "parquet", "safetensors"}


def test_unknown_keys_and_bad_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(_write(tmp_path, {"sources": [{"layout": "demo"}], "shards": 3}))
    with pytest.raises(ConfigError, match="export_formats"):
        load_config(_write(tmp_path, {"sources": [{"layout": "demo"}], "export_formats": ["csv"]}))
    with pytest.raises(ConfigError, match="sources"):
        load_config(_write(tmp_path, {"name": "x"}))
    with pytest.raises(ConfigError, match="layout"):
        load_config(_write(tmp_path, {"sources": [{"root": "x"}]}))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_versions_change_only_with_what_they_cover(tmp_path, monkeypatch):
    monkeypatch.delenv("MM_STORAGE_ROOT", raising=False)
    base = {"sources": [{"layout": "demo"}], "modalities": {"text": {}, "vision": {"model": "a"}}}
    a = load_config(_write(tmp_path, base))
    b = load_config(_write(tmp_path, {**base, "modalities": {"text": {}, "vision": {"model": "b"}}}))
    assert a.encoder_version("text") == b.encoder_version("text")
    assert a.encoder_version("vision") != b.encoder_version("vision")
    assert a.fusion_version() != b.fusion_version()  # the model's inputs changed
    assert a.source_version() == b.source_version()
    c = load_config(_write(tmp_path, {**base, "fusion": {"strategy": "anchor"}}))
    assert c.fusion_version() != a.fusion_version() and c.encoder_version("vision") == a.encoder_version("vision")


def test_relative_source_paths_resolve_against_the_config_file(tmp_path):
    cfg = load_config(_write(tmp_path, {"sources": [{"layout": "fsdd", "root": "sub/fsdd"}]}))
    assert cfg.resolve("sub/fsdd") == (tmp_path / "sub" / "fsdd").resolve()


def test_decode_workers_keep_input_order(datasets_dir):
    from mm_core.pipeline import decode_all
    from mm_core.registry import get

    paths = sorted((datasets_dir / "fsdd" / "recordings").glob("*.wav"))[:12]
    decode = get("audio").decode
    serial = decode_all(decode, paths)
    threaded = decode_all(decode, paths, workers=3)
    assert [a.samples.shape for a in threaded] == [a.samples.shape for a in serial]
    assert all((a.samples == b.samples).all() for a, b in zip(serial, threaded, strict=True))


def test_new_weights_at_the_same_path_change_the_encoder_version(tmp_path):
    weights = tmp_path / "vision.safetensors"
    weights.write_bytes(b"old")
    data = {"sources": [{"layout": "demo"}], "modalities": {"vision": {"weights": str(weights)}, "text": {}}}
    cfg = load_config(_write(tmp_path, data))
    before = {m: cfg.encoder_version(m) for m in ("vision", "text")}
    weights.write_bytes(b"new weights")
    assert cfg.encoder_version("vision") != before["vision"]
    assert cfg.encoder_version("text") == before["text"]
