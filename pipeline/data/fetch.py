"""Fetch a file over HTTP(S): resumable, retried, checksummed, with a progress bar.

Standard library only for the network (urllib), rich for the progress bar.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from pipeline import __version__
from pipeline.errors import DownloadError, StorageError, is_disk_full
from pipeline.fileio import human_size
from pipeline.progress import clock, on_terminal, say

_logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = f"catdog-pipeline/{__version__}"
HAND = "download it by hand and pass it with --from PATH"


class _Truncated(Exception):
    """The server closed the connection before sending Content-Length bytes."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks.

    Args:
        path: the file to hash.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def url_filename(url: str) -> str:
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not name:
        raise DownloadError(f"Cannot tell a file name from the URL {url}: give a URL that ends in the file name.")
    return name


def _progress(enabled: bool):
    """A rich bar on a terminal; plain lines elsewhere (a log file, a notebook cell); nothing when off."""
    if enabled and not on_terminal():
        return PlainTransfer()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), disable=not enabled)


class PlainTransfer:
    """A download's progress as plain lines: when it starts, at each quarter of its size, and when it ends.

    The same ``add_task``/``update`` calls as rich's Progress, which ``_transfer`` makes.
    """

    def __init__(self):
        self.name, self.total, self.done, self.quarter, self.t0 = "", None, 0, 0, time.perf_counter()

    def __enter__(self) -> PlainTransfer:
        return self

    def __exit__(self, exc_type, *exc) -> bool:
        if exc_type is None and self.done:
            seconds = time.perf_counter() - self.t0
            rate = human_size(self.done / max(seconds, 1e-9))
            say(f"{self.name}: {human_size(self.done)} in {clock(seconds)} ({rate}/s)")
        return False

    def add_task(self, name: str, total=None) -> int:
        self.name, self.total = name, total
        return 0

    def update(self, task: int, *, total=None, completed=None, advance=None) -> None:
        if total is not None or completed is not None:
            self.total, self.done = total if total is not None else self.total, completed or 0
            size = human_size(self.total) if self.total else "size unknown"
            say(f"{self.name}: downloading ({size}{f', resuming at {human_size(self.done)}' if self.done else ''})")
        if advance:
            self.done += advance
            quarter = 4 * self.done // self.total if self.total else 0
            if 0 < quarter < 4 and quarter > self.quarter:
                self.quarter = quarter
                say(f"{self.name}: {human_size(self.done)} of {human_size(self.total)} ({25 * quarter}%), "
                    f"{clock(time.perf_counter() - self.t0)} elapsed")


def fetch(url: str, dest_dir: str | os.PathLike, *, filename: str | None = None, sha256: str | None = None,
          retries: int = 4, backoff: float = 1.0, timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``url`` into ``dest_dir``, resuming a partial download and retrying transient failures.

    A file already there (with the right digest when one is pinned) is returned without any request.

    Args:
        url: http(s) URL of the file.
        dest_dir: folder to put it in (created if missing).
        filename: name to save it under; default: the last component of the URL path.
        sha256: pinned hex digest; a mismatch moves the file to ``NAME.bad`` and raises DownloadError.
        retries: further attempts after the first on connection errors, timeouts, cut-off bodies,
            HTTP 5xx and 429 (a DNS failure is retried once at most).
        backoff: seconds before the first retry, doubled for each further one.
        timeout: seconds a connect or a read may stall.
        progress: show a progress bar.
    """
    dest_dir = Path(dest_dir)
    name = filename or url_filename(url)
    final, part, bad = dest_dir / name, dest_dir / f"{name}.part", dest_dir / f"{name}.bad"
    expected = sha256.lower() if sha256 else None
    if final.exists():
        if expected is None or sha256_file(final) == expected:
            _logger.info("%s is already downloaded", final)
            return final
        os.replace(final, bad)
        _logger.warning("%s does not match its pinned SHA-256; moved it to %s and downloading it again", final, bad)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with _progress(progress) as bar:
        task = bar.add_task(name, total=None)
        try:
            _download(url, part, name, lambda **kw: bar.update(task, **kw),
                      retries=retries, backoff=backoff, timeout=timeout)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            have = part.stat().st_size if part.exists() else 0
            raise StorageError(f"No space left on the device while downloading {name}: the partial download {part} "
                               f"({have:,} bytes) is kept, and the same command resumes it once you have freed some "
                               "space.") from None
    if expected is not None:
        actual = sha256_file(part)
        if actual != expected:
            os.replace(part, bad)
            raise DownloadError(f"{name} from {url} has SHA-256 {actual} but {expected} was expected; it was "
                                f"kept aside as {bad}: delete it and download again, or {HAND}.")
    os.replace(part, final)
    _logger.info("downloaded %s", final)
    return final


def _download(url: str, part: Path, name: str, update: Callable[..., None], *, retries: int, backoff: float,
              timeout: float) -> None:
    """Bring ``part`` to the complete file, retrying as ``fetch`` describes."""
    host = urlsplit(url).hostname or url
    dns_failures = 0
    for attempt in range(1, retries + 2):
        try:
            _transfer(url, part, update, timeout)
            return
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 429 and exc.code < 500:
                raise DownloadError(f"{host} answered HTTP {exc.code} ({exc.reason}) for {url}: check the URL, "
                                    f"or {HAND}.") from None
            failure, last = f"HTTP {exc.code}", exc
        except urllib.error.URLError as exc:  # the connection could not be opened
            failure, last = str(exc.reason), exc
            if isinstance(exc.reason, socket.gaierror):
                dns_failures += 1
                if dns_failures > 1:
                    break
        except (TimeoutError, ConnectionError, http.client.HTTPException, ssl.SSLError, _Truncated) as exc:
            failure, last = str(exc) or type(exc).__name__, exc
        if attempt <= retries:
            delay = backoff * 2 ** (attempt - 1)
            _logger.warning("download of %s failed (%s); retry %d of %d in %.1f s", name, failure, attempt,
                            retries, delay)
            time.sleep(delay)
    if isinstance(last, urllib.error.HTTPError):
        raise DownloadError(f"{host} answered HTTP {last.code} to all {attempt} requests for {name}: try again "
                            f"later, or {HAND}.")
    if isinstance(last, urllib.error.URLError):
        raise DownloadError(f"Could not reach {host} to download {name} ({last.reason}; no network?): {HAND}.")
    raise DownloadError(f"The download of {name} from {host} broke off {attempt} times ({failure}): run the same "
                        f"command again to resume it, or {HAND}.")


def _transfer(url: str, part: Path, update: Callable[..., None], timeout: float) -> None:
    """One request for what ``part`` still lacks, appended to it (or written afresh if the server restarts)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT} | ({"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        exc.close()
        if _content_range(exc.headers.get("Content-Range", ""))[1] == have:
            return  # the .part is already the whole file
        _logger.info("%s does not fit the file on the server; downloading it from the start", part)
        part.unlink()
        return _transfer(url, part, update, timeout)
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                _logger.info("the server resumed %s at byte %s instead of %d; downloading it from the start",
                             part, start, have)
                part.unlink()
                return _transfer(url, part, update, timeout)
        else:
            if have:
                _logger.info("the server ignored the Range request; downloading %s from the start", part)
            have, total = 0, length
        update(total=total, completed=have)
        got = 0
        with open(part, "ab" if have else "wb") as f:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                got += len(chunk)
                update(advance=len(chunk))
    if length is not None and got < length:
        raise _Truncated(f"connection closed after {got} of {length} bytes")


def _content_range(value: str) -> tuple[int | None, int | None]:
    """(start, total) of ``bytes START-END/TOTAL`` or ``bytes */TOTAL``; None where absent or ``*``."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)
