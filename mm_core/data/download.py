"""HTTP(S) URL lists -> verified local files (SPEC M11 "raw downloads", R2).

Each URL streams into ``<name>.part`` beside its final name. A dropped
connection, a 5xx/408/429 answer or a short body is retried with exponential
backoff; a partial ``.part`` (from this run or a killed earlier one) resumes
with an HTTP ``Range`` request when the server answers 206, and restarts from
zero when it answers 200. Size and sha256, when given, are checked before the
file is renamed into place with ``os.replace``, so a final name only ever holds
a complete, verified file. A checksum mismatch deletes the part and retries;
permanent answers (404 and other 4xx) fail at once. Nothing raises for one bad
URL: the :class:`DownloadReport` lists what succeeded, what was already there,
and what failed with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # small: a dropped connection loses at most one unfinished chunk
_RETRYABLE_STATUS = {408, 429}


@dataclass(frozen=True)
class DownloadItem:
    """One URL; ``path`` is relative to the destination (default: the URL's file name)."""

    url: str
    path: str | None = None
    sha256: str | None = None
    size: int | None = None


@dataclass
class DownloadResult:
    """What happened to one URL."""

    url: str
    path: Path | None
    status: str  # "downloaded" | "skipped" | "failed"
    bytes: int = 0
    attempts: int = 0
    reason: str = ""


@dataclass
class DownloadReport:
    """Per-URL outcome of :func:`download_urls`."""

    succeeded: list[DownloadResult] = field(default_factory=list)
    skipped: list[DownloadResult] = field(default_factory=list)
    failed: list[DownloadResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every URL is on disk and verified."""
        return not self.failed

    @property
    def paths(self) -> list[Path]:
        """Final paths of downloaded and skipped files."""
        return [r.path for r in self.succeeded + self.skipped if r.path is not None]

    def summary(self) -> str:
        """One line per failure under a count line, for logs and asset metadata."""
        head = (
            f"{len(self.succeeded)} downloaded, {len(self.skipped)} already present, "
            f"{len(self.failed)} failed"
        )
        return "\n".join([head, *(f"  {r.url}: {r.reason}" for r in self.failed)])


class _Retry(Exception):
    """A transient problem: try again (after backoff)."""


class _Fail(Exception):
    """A permanent problem: give up on this URL."""


def _as_item(item: str | Mapping[str, Any] | DownloadItem) -> DownloadItem:
    if isinstance(item, DownloadItem):
        return item
    if isinstance(item, str):
        return DownloadItem(url=item)
    size = item.get("size")
    return DownloadItem(
        url=str(item["url"]),
        path=item.get("path"),
        sha256=(item.get("sha256") or None) and str(item["sha256"]).lower(),
        size=int(size) if size is not None else None,
    )


def _target(item: DownloadItem, dest: Path) -> Path:
    """Final path inside ``dest``; refuses absolute paths and ``..`` (manifest paths are untrusted)."""
    rel = item.path or unquote(PurePosixPath(urlsplit(item.url).path).name)
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if not rel or PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
        raise _Fail(f"destination path {rel!r} is empty or escapes the destination folder")
    return dest.joinpath(*parts)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, item: DownloadItem) -> str | None:
    """None when ``path`` matches the expected size and sha256, else why not."""
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        return f"size mismatch: expected {item.size} bytes, got {size}"
    if item.sha256 is not None:
        digest = _sha256(path)
        if digest != item.sha256:
            return f"sha256 mismatch: expected {item.sha256}, got {digest}"
    return None


class _Downloader:
    def __init__(self, retries: int, backoff: float, timeout: float) -> None:
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe: one per worker thread.
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def fetch(self, item: DownloadItem, final: Path) -> DownloadResult:
        if final.is_file() and _verify(final, item) is None:
            return DownloadResult(item.url, final, "skipped", bytes=final.stat().st_size)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + ".part")
        reason = ""
        for attempt in range(1, self.retries + 2):
            try:
                self._stream(item, part)
                problem = _verify(part, item)
                if problem is not None:
                    part.unlink(missing_ok=True)
                    raise _Retry(problem)
                os.replace(part, final)
                return DownloadResult(item.url, final, "downloaded", final.stat().st_size, attempt)
            except _Fail as exc:
                return DownloadResult(item.url, None, "failed", attempts=attempt, reason=str(exc))
            except (_Retry, requests.RequestException, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                if attempt <= self.retries:
                    delay = self.backoff * 2 ** (attempt - 1)
                    log.warning("%s attempt %d: %s; retry in %.2fs", item.url, attempt, reason, delay)
                    time.sleep(delay)
        # A partial .part stays: the next run resumes it (it never carries the final name).
        return DownloadResult(item.url, None, "failed", attempts=self.retries + 1, reason=reason)

    def _stream(self, item: DownloadItem, part: Path) -> None:
        """Append the rest of the body to ``part`` (or restart it); raise _Retry/_Fail on problems."""
        offset = part.stat().st_size if part.exists() else 0
        if item.size is not None and offset >= item.size:
            if offset == item.size:
                return  # complete from an earlier run: verify it as is
            part.unlink()
            offset = 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self.session.get(item.url, stream=True, timeout=self.timeout, headers=headers) as resp:
            if resp.status_code == 416 and offset:
                return  # nothing left to send: the part is complete (verify decides)
            if resp.status_code >= 500 or resp.status_code in _RETRYABLE_STATUS:
                raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
            if resp.status_code >= 400:
                raise _Fail(f"HTTP {resp.status_code} {resp.reason}")
            resumed = resp.status_code == 206 and offset > 0 and _range_start(resp) == offset
            if resp.status_code == 206 and not resumed:
                raise _Retry(f"server sent an unexpected range: {resp.headers.get('Content-Range')}")
            expected = resp.headers.get("Content-Length")
            written = 0
            with part.open("ab" if resumed else "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    f.write(chunk)
                    written += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and written < int(expected):
                raise _Retry(f"body truncated: got {written} of {expected} bytes")


def _range_start(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def download_urls(
    items: Iterable[str | Mapping[str, Any] | DownloadItem],
    dest_dir: str | os.PathLike[str],
    *,
    workers: int = 4,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: float = 30,
    progress: bool = False,
) -> DownloadReport:
    """Download URLs (or ``{url, path?, sha256?, size?}`` dicts) into ``dest_dir`` in parallel.

    Already present files that verify are skipped; see the module docstring for
    retries, resume and atomic renames. Returns a report, never raises for a URL.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    report = DownloadReport()
    unique: dict[Path, DownloadItem] = {}
    for raw in items:
        item = _as_item(raw)
        try:
            final = _target(item, dest)
        except _Fail as exc:
            report.failed.append(DownloadResult(item.url, None, "failed", reason=str(exc)))
            continue
        if final in unique:
            reason = f"duplicate destination {final.name!r} (also {unique[final].url})"
            report.failed.append(DownloadResult(item.url, None, "failed", reason=reason))
        else:
            unique[final] = item
    worker = _Downloader(retries, backoff, timeout)
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(unique), desc="download", unit="file", disable=not progress) as bar,
    ):
        futures = [pool.submit(worker.fetch, item, final) for final, item in unique.items()]
        for fut in as_completed(futures):
            result = fut.result()
            {"downloaded": report.succeeded, "skipped": report.skipped, "failed": report.failed}[
                result.status
            ].append(result)
            bar.update()
    return report
