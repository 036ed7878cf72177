"""Fetch (resumable, retried, checksummed) and safely unpack the competition archives.

Standard library only for the network (urllib), rich for the progress bar.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, IO, Iterator
from urllib.parse import unquote, urlsplit

from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from pipeline import __version__
from pipeline.errors import (ConfigError, DownloadError, ExtractError, PipelineError, StorageError, is_disk_full,
                             storage_error)
from pipeline.fileio import human_size, write_json
from pipeline.sources import get_source

_logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = f"catdog-pipeline/{__version__}"
MARKER = ".extracted.json"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
_HAND = "download it by hand and pass it with --from PATH"

# Archive sizes are checked from the members' declared sizes before anything is written.
# Photos are JPEGs, already compressed, so a real competition archive unpacks to about its own
# size (1:1); a declared total far above the archive's size is a zip bomb (a 600 kB zip of zeros
# declares 600 MB). Small archives of text (CSV, README) may compress well, hence the floor.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_ABOVE = 64 << 20
# Left free after unpacking: the file system's own overhead (a partly used block per photo, the
# folders) and room for what comes next (the catalogue, the decoded-image cache, runs).
FREE_SPACE_MARGIN = 64 << 20


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


def _url_filename(url: str) -> str:
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not name:
        raise DownloadError(f"Cannot tell a file name from the URL {url}: give a URL that ends in the file name.")
    return name


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), disable=not enabled)


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
    name = filename or _url_filename(url)
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
                                f"kept aside as {bad}: delete it and download again, or {_HAND}.")
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
                                    f"or {_HAND}.") from None
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
                            f"later, or {_HAND}.")
    if isinstance(last, urllib.error.URLError):
        raise DownloadError(f"Could not reach {host} to download {name} ({last.reason}; no network?): {_HAND}.")
    raise DownloadError(f"The download of {name} from {host} broke off {attempt} times ({failure}): run the same "
                        f"command again to resume it, or {_HAND}.")


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


# ---- extraction ------------------------------------------------------------------------------------------

def is_archive(name: str | os.PathLike) -> bool:
    """Whether the file name ends in a suffix ``extract_archive`` can unpack."""
    return str(name).lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(name: str | os.PathLike) -> str:
    """The file name without its archive suffix: ``train.zip`` -> ``train``, ``x.tar.gz`` -> ``x``."""
    base = Path(name).name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def extract_archive(archive: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """Safely unpack a .zip/.tar/.tar.gz/.tgz into ``target_dir``, then any .zip found inside it.

    Every member is checked before anything is written; the archive is unpacked into a hidden sibling
    folder that is renamed onto ``target_dir`` when complete, with a marker so that unpacking the same
    (unchanged) archive again returns at once. An inner ``x.zip`` is unpacked into ``x/`` beside it and
    removed from the tree. ``__MACOSX/`` members are skipped.

    Args:
        archive: the archive file.
        target_dir: folder to create (replaced if an earlier extraction made it).
    """
    archive, target = Path(archive), Path(target_dir)
    st = archive.stat()
    marker = {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if target.exists():
        with contextlib.suppress(OSError, ValueError):
            if json.loads((target / MARKER).read_text(encoding="utf-8")) == marker:
                _logger.info("%s is already extracted into %s", archive, target)
                return target
        if not (target / MARKER).exists() and any(target.iterdir()):
            raise ExtractError(f"{target} already exists and was not made by unpacking an archive: move it away "
                               f"before unpacking {archive.name} there.")
    staging = target.with_name(f".{target.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    try:
        _unpack(archive, staging)
        for inner in sorted(p for p in staging.rglob("*.zip") if p.is_file()):  # one level: no zip quines
            _unpack(inner, inner.with_name(archive_stem(inner.name)))
            inner.unlink()
        write_json(staging / MARKER, marker)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as exc:
        if is_disk_full(exc):
            raise StorageError(f"No space left on the device while unpacking {archive.name} into {target.parent}: "
                               "the partly unpacked files were removed; free some space and run the same command "
                               "again.") from None
        error = storage_error(exc)
        if error is None:
            raise
        raise error from None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _logger.info("extracted %s into %s", archive, target)
    return target


def _unpack(archive: Path, dest: Path) -> None:
    """Check every member of ``archive``, then write the regular files and folders under ``dest``."""
    if not is_archive(archive.name):
        raise ExtractError(f"{archive} is not a .zip, .tar, .tar.gz or .tgz archive: pass an archive or a folder.")
    try:
        with _members(archive) as members:
            safe = [(_safe_relpath(archive, name, kind), kind, size, opener) for name, kind, size, opener in members]
            _check_size(archive, dest, sum(size for rel, kind, size, _ in safe if rel is not None and kind == "file"))
            dest.mkdir(parents=True, exist_ok=True)
            for rel, kind, size, opener in safe:
                if rel is None:
                    continue
                out = dest.joinpath(*rel.parts)
                if kind == "dir":
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with opener() as src, open(out, "wb") as dst:
                    _copy_member(src, dst, size, archive, str(rel))
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise ExtractError(f"{archive} is corrupt or truncated ({exc}): delete it and download it again.") from None


def _check_size(archive: Path, dest: Path, total: int) -> None:
    """ExtractError unless ``total`` declared bytes are a plausible unpacking of ``archive`` and fit beside ``dest``.

    Args:
        archive: the archive about to be unpacked.
        dest: the folder it would be unpacked into (may not exist yet).
        total: the sum of its file members' declared (uncompressed) sizes.
    """
    packed = archive.stat().st_size
    ratio = total / max(packed, 1)
    if total > RATIO_CHECK_ABOVE and ratio > MAX_COMPRESSION_RATIO:
        raise ExtractError(f"{archive} declares {human_size(total)} of files in {human_size(packed)}, a compression "
                           f"ratio of {ratio:,.0f}:1 where photos give about 1:1 (limit {MAX_COMPRESSION_RATIO}:1), so "
                           "it looks like a zip bomb and nothing was unpacked: check where the archive came from.")
    probe = dest
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if total > free - FREE_SPACE_MARGIN:
        raise ExtractError(f"{archive.name} unpacks to {human_size(total)} but the disk holding {probe} has "
                           f"{human_size(free)} free, and {human_size(FREE_SPACE_MARGIN)} is kept spare, so nothing was "
                           "unpacked: free some space or point --data-dir at a larger disk, then run the same command "
                           "again.")


def _copy_member(src: IO[bytes], dst: IO[bytes], declared: int, archive: Path, name: str) -> None:
    """Copy a member's bytes, never more than its header ``declared`` (zipfile and tarfile stop there too)."""
    left = declared
    while chunk := src.read(min(_CHUNK, left + 1)):
        if len(chunk) > left:
            raise ExtractError(f"{archive} member {name!r} holds more than the {declared:,} bytes its header "
                               "declares; refusing to unpack it: check where the archive came from.")
        dst.write(chunk)
        left -= len(chunk)


@contextlib.contextmanager
def _members(archive: Path) -> Iterator[list[tuple[str, str, int, Callable[[], IO[bytes]]]]]:
    """(name, kind, declared size, opener) of each member; kind is 'file', 'dir', 'link' or 'special'."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            yield [(i.filename, _zip_kind(i), i.file_size, lambda i=i: zf.open(i)) for i in zf.infolist()]
    else:
        with tarfile.open(archive) as tf:
            yield [(m.name, _tar_kind(m), m.size, lambda m=m: tf.extractfile(m)) for m in tf.getmembers()]


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    return "dir" if info.is_dir() else "file"


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return "link"
    return "dir" if member.isdir() else "file" if member.isfile() else "special"


def _safe_relpath(archive: Path, name: str, kind: str) -> PurePosixPath | None:
    """The member's path relative to the target, None for junk to skip; ExtractError if it is unsafe."""
    unsafe = None
    norm = posixpath.normpath(name.replace("\\", "/"))
    if kind == "link":
        unsafe = "is a link"
    elif kind == "special":
        unsafe = "is a device or pipe"
    elif norm.startswith("/") or re.match(r"[A-Za-z]:", norm):
        unsafe = "has an absolute path"
    elif norm == ".." or norm.startswith("../"):
        unsafe = "points outside the target folder"
    if unsafe:
        raise ExtractError(f"{archive} member {name!r} {unsafe}; refusing to unpack it: check where the archive "
                           f"came from.")
    rel = PurePosixPath(norm)
    return None if norm == "." or rel.parts[0] == "__MACOSX" else rel


# ---- kaggle ----------------------------------------------------------------------------------------------

def _kaggle_credentials_found() -> bool:
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return True
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return any((config / f).is_file() for f in ("kaggle.json", "access_token"))


def kaggle_rules(competition: str) -> str:
    """The page on which a competition's rules are accepted (Kaggle refuses downloads and submissions before)."""
    return f"https://www.kaggle.com/competitions/{competition}/rules"


def kaggle_command(competition: str, error: type[PipelineError] = DownloadError) -> str:
    """The path of the official ``kaggle`` CLI, once it and the API credentials are known to be there.

    Args:
        competition: the competition's slug (named in the messages, with its rules page).
        error: the error class to raise (``pipeline submit`` raises its own).

    Raises:
        error: no ``kaggle`` on PATH, or no credentials (file or environment variables).
    """
    rules = kaggle_rules(competition)
    exe = shutil.which("kaggle")
    if exe is None:
        raise error("The kaggle command was not found: install it with `pip install kaggle` and put your API "
                    f"token in ~/.kaggle/kaggle.json (and accept the competition rules on {rules}).")
    if not _kaggle_credentials_found():
        raise error("No Kaggle API credentials found (no ~/.kaggle/kaggle.json or ~/.kaggle/access_token, no "
                    "KAGGLE_USERNAME/KAGGLE_KEY or KAGGLE_API_TOKEN): create a token at "
                    "https://www.kaggle.com/settings/api, save it as ~/.kaggle/kaggle.json, and accept the "
                    f"competition rules on {rules}.")
    return exe


def fetch_kaggle(competition: str, dest_dir: str | os.PathLike, *, progress: bool = True) -> Path:
    """Download a competition's files with the official ``kaggle`` CLI; return ``dest_dir/COMPETITION.zip``.

    Args:
        competition: the competition's slug, e.g. ``dogs-vs-cats``.
        dest_dir: folder for the zip; an existing zip is returned without running the CLI.
        progress: let the CLI print its own progress bar.
    """
    dest_dir = Path(dest_dir)
    zip_path = dest_dir / f"{competition}.zip"
    if zip_path.exists():
        _logger.info("%s is already downloaded", zip_path)
        return zip_path
    rules = kaggle_rules(competition)
    exe = kaggle_command(competition)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "competitions", "download", "-c", competition, "-p", str(dest_dir)]
    _logger.info("running %s", " ".join(cmd))
    result = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, check=False)
    if result.returncode != 0 or not zip_path.exists():
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        if result.returncode == 0:
            why = f"it did not write {zip_path}"
        raise DownloadError(f"`kaggle competitions download -c {competition}` failed ({why}): check your API token "
                            f"and that you accepted the rules on {rules}.")
    return zip_path


# ---- the download stage ------------------------------------------------------------------------------------

def acquire(*, source: str | None = None, urls: list[str] = (), from_paths: list[Path] = (), raw_dir: Path,
            extract_dir: Path, progress: bool = True) -> list[Path]:
    """Fetch and unpack the data; return the folders that hold the images.

    Archives go to ``raw_dir`` and are unpacked into ``extract_dir/<archive stem>/``; a folder given in
    ``from_paths`` is returned as it is.

    Args:
        source: a name from ``pipeline.sources.SOURCES``; "course" when nothing at all is given.
        urls: further archive URLs to fetch.
        from_paths: local archives or folders to use instead of downloading.
        raw_dir: folder for the downloaded archives.
        extract_dir: folder for the unpacked archives.
        progress: show progress bars.
    """
    if source is None and not urls and not from_paths:
        source = "course"
    src = get_source(source) if source is not None else None
    downloads = [(u, src.sha256.get(_url_filename(u))) for u in src.urls] if src else []
    downloads += [(u, None) for u in urls]
    from_paths = [Path(p) for p in from_paths]
    for p in from_paths:
        if not p.exists():
            raise ExtractError(f"{p} does not exist: pass an existing archive or folder with --from.")
        if not p.is_dir() and not is_archive(p):
            raise ExtractError(f"{p} is neither a folder nor a .zip/.tar/.tar.gz/.tgz archive: pass one of those "
                               "with --from.")
    for u, _ in downloads:
        if not is_archive(_url_filename(u)):
            raise DownloadError(f"{u} does not end in .zip, .tar, .tar.gz or .tgz: pass the URL of an archive, or "
                                "download the files by hand and pass their folder with --from.")
    names = ([f"{src.kaggle_competition}.zip"] if src and src.kaggle_competition else [])
    names += [_url_filename(u) for u, _ in downloads] + [p.name for p in from_paths if not p.is_dir()]
    stems = [archive_stem(n) for n in names]
    clash = next((s for s in stems if stems.count(s) > 1), None)
    if clash is not None:
        raise ConfigError(f"Two archives would unpack into {Path(extract_dir) / clash} ("
                          f"{', '.join(n for n in names if archive_stem(n) == clash)}): rename one of them.")

    archives = [fetch_kaggle(src.kaggle_competition, raw_dir, progress=progress)] if src and \
        src.kaggle_competition else []
    archives += [fetch(u, raw_dir, sha256=sha, progress=progress) for u, sha in downloads]
    archives += [p for p in from_paths if not p.is_dir()]
    roots = [extract_archive(a, Path(extract_dir) / archive_stem(a.name)) for a in archives]
    return roots + [p for p in from_paths if p.is_dir()]
