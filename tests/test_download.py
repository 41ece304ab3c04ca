"""download_urls against a real HTTP server on 127.0.0.1 (no internet): resume, retries, checksums."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mm_core.data.download import DownloadReport, download_urls


class _State:
    """What the server serves and how it misbehaves; shared with the handler."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.wrong: dict[str, bytes] = {}  # path -> bytes served instead of the real ones
        self.drops: dict[str, int] = {}  # path -> how many more responses to cut mid-body
        self.errors: dict[str, list[int]] = {}  # path -> status codes to answer first
        self.ranges = True
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        st = self.state
        rng = self.headers.get("Range")
        with st.lock:
            st.requests.append((self.path, rng))
            queued = st.errors.get(self.path)
            status = queued.pop(0) if queued else None
            drop = st.drops.get(self.path, 0)
            if drop:
                st.drops[self.path] = drop - 1
        if status is not None:
            self.send_error(status)
            return
        body = st.wrong.get(self.path, st.files.get(self.path))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and st.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if drop:  # send part of the body, then cut the connection
            self.wfile.write(rest[: max(1, len(rest) // 3)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)


@pytest.fixture()
def server() -> Iterator[tuple[str, _State]]:
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _payload(n: int, seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + os.urandom(n % 32)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_parts(root: Path) -> bool:
    return not list(root.rglob("*.part"))


def _fetch(items: list, dest: Path, **kw) -> DownloadReport:
    return download_urls(items, dest, backoff=0.01, timeout=5, **kw)


def test_normal_files_and_skip_on_rerun(server, tmp_path):
    base, st = server
    st.files = {"/a.bin": _payload(5000, 1), "/sub/b.bin": _payload(70000, 2)}
    items = [
        {"url": f"{base}/a.bin", "sha256": _sha(st.files["/a.bin"]), "size": 5000},
        {"url": f"{base}/sub/b.bin", "path": "nested/b.bin", "sha256": _sha(st.files["/sub/b.bin"])},
    ]
    report = _fetch(items, tmp_path)
    assert report.ok and len(report.succeeded) == 2, report.summary()
    assert (tmp_path / "a.bin").read_bytes() == st.files["/a.bin"]
    assert (tmp_path / "nested" / "b.bin").read_bytes() == st.files["/sub/b.bin"]
    assert _no_parts(tmp_path)

    n_requests = len(st.requests)
    again = _fetch(items, tmp_path)
    assert len(again.skipped) == 2 and not again.succeeded and not again.failed
    assert len(st.requests) == n_requests  # verified from disk, no new request


def test_dropped_connection_resumes_with_range(server, tmp_path):
    base, st = server
    data = _payload(300_000, 3)
    st.files["/big.bin"] = data
    st.drops["/big.bin"] = 2
    report = _fetch([{"url": f"{base}/big.bin", "sha256": _sha(data)}], tmp_path)
    assert report.ok, report.summary()
    assert report.succeeded[0].attempts == 3
    assert (tmp_path / "big.bin").read_bytes() == data
    ranges = [r for p, r in st.requests if p == "/big.bin"]
    assert ranges[0] is None and all(r and r != "bytes=0-" for r in ranges[1:])
    assert _no_parts(tmp_path)


def test_restart_when_server_ignores_range(server, tmp_path):
    base, st = server
    data = _payload(100_000, 4)
    st.files["/c.bin"] = data
    st.drops["/c.bin"] = 1
    st.ranges = False
    report = _fetch([{"url": f"{base}/c.bin", "size": len(data), "sha256": _sha(data)}], tmp_path)
    assert report.ok, report.summary()
    assert (tmp_path / "c.bin").read_bytes() == data  # 200 answer rewrote the part from zero


def test_wrong_bytes_fail_checksum_and_leave_no_file(server, tmp_path):
    base, st = server
    good = _payload(4000, 5)
    st.files["/d.bin"] = good
    st.wrong["/d.bin"] = _payload(4000, 6)
    report = _fetch([{"url": f"{base}/d.bin", "sha256": _sha(good)}], tmp_path, retries=2)
    assert not report.ok and len(report.failed) == 1
    assert "sha256 mismatch" in report.failed[0].reason
    assert report.failed[0].attempts == 3
    assert not (tmp_path / "d.bin").exists() and _no_parts(tmp_path)
    assert "d.bin" in report.summary()


def test_404_is_reported_without_retrying(server, tmp_path):
    base, st = server
    report = _fetch([f"{base}/missing.bin"], tmp_path)
    assert len(report.failed) == 1 and "404" in report.failed[0].reason
    assert len(st.requests) == 1
    assert not (tmp_path / "missing.bin").exists()


def test_5xx_is_retried(server, tmp_path):
    base, st = server
    st.files["/e.bin"] = _payload(2000, 7)
    st.errors["/e.bin"] = [503, 500]
    report = _fetch([f"{base}/e.bin"], tmp_path)
    assert report.ok and report.succeeded[0].attempts == 3
    assert (tmp_path / "e.bin").read_bytes() == st.files["/e.bin"]


def test_partial_file_from_previous_run_is_resumed(server, tmp_path):
    base, st = server
    data = _payload(50_000, 8)
    st.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data[:20_000])
    report = _fetch([{"url": f"{base}/f.bin", "sha256": _sha(data), "size": len(data)}], tmp_path)
    assert report.ok, report.summary()
    assert st.requests == [("/f.bin", "bytes=20000-")]
    assert (tmp_path / "f.bin").read_bytes() == data


def test_failed_run_keeps_part_and_next_run_resumes(server, tmp_path):
    base, st = server
    data = _payload(400_000, 9)
    st.files["/g.bin"] = data
    st.drops["/g.bin"] = 100  # every answer is cut short
    item = {"url": f"{base}/g.bin", "sha256": _sha(data)}
    first = _fetch([item], tmp_path, retries=1)
    reason = first.failed[0].reason.lower() if first.failed else ""
    assert not first.ok and ("incompleteread" in reason or "truncated" in reason), reason
    part = tmp_path / "g.bin.part"
    assert not (tmp_path / "g.bin").exists() and 0 < part.stat().st_size < len(data)
    kept = part.stat().st_size
    st.drops["/g.bin"] = 0
    st.requests.clear()
    second = _fetch([item], tmp_path)
    assert second.ok and (tmp_path / "g.bin").read_bytes() == data
    assert st.requests == [("/g.bin", f"bytes={kept}-")]


def test_parallel_downloads_and_unsafe_names(server, tmp_path):
    base, st = server
    for i in range(12):
        st.files[f"/p{i}.bin"] = _payload(20_000 + i, 100 + i)
    items = [{"url": f"{base}/p{i}.bin", "sha256": _sha(st.files[f"/p{i}.bin"])} for i in range(12)]
    items += [{"url": f"{base}/p0.bin", "path": "../escape.bin"}, {"url": f"{base}/p1.bin"}]
    report = _fetch(items, tmp_path / "out", workers=6, progress=True)
    assert len(report.succeeded) == 12
    reasons = sorted(r.reason for r in report.failed)
    assert len(reasons) == 2 and "escapes" in reasons[0] and "duplicate destination" in reasons[1]
    for i in range(12):
        assert (tmp_path / "out" / f"p{i}.bin").read_bytes() == st.files[f"/p{i}.bin"]
    assert not (tmp_path / "escape.bin").exists()
