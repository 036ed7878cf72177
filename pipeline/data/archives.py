"""Safe unpacking of the competition archives (.zip, .tar, .tar.gz, .tgz, .7z).

Every member is checked before anything is written: no member may escape the target folder (``../``,
absolute paths), links and devices are refused, and the declared sizes must fit the disk and look like
photos rather than a zip bomb. The standard library's zipfile and tarfile do the reading, py7zr reads .7z
(Kaggle's CIFAR-10 ships ``train.7z`` and ``test.7z``).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from pipeline.errors import ExtractError, StorageError, is_disk_full, storage_error
from pipeline.fileio import human_size, write_json

_logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
MARKER = ".extracted.json"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".7z")


# Archive sizes are checked from the members' declared sizes before anything is written.
# Photos are JPEGs, already compressed, so a real competition archive unpacks to about its own
# size (1:1); a declared total far above the archive's size is a zip bomb (a 600 kB zip of zeros
# declares 600 MB). Small archives of text (CSV, README) may compress well, hence the floor.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_ABOVE = 64 << 20
# Left free after unpacking: the file system's own overhead (a partly used block per photo, the
# folders) and room for what comes next (the catalogue, the decoded-image cache, runs).
FREE_SPACE_MARGIN = 64 << 20


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
    """Safely unpack a .zip/.tar/.tar.gz/.tgz/.7z into ``target_dir``, then any archive found inside it.

    Every member is checked before anything is written; the archive is unpacked into a hidden sibling
    folder that is renamed onto ``target_dir`` when complete, with a marker so that unpacking the same
    (unchanged) archive again returns at once. An inner archive (``train.7z`` in Kaggle's cifar-10.zip) is
    unpacked into its stem folder beside it (``train/``) and removed from the tree; what the inner archives
    hold is left packed (one level). ``__MACOSX/`` members are skipped.

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
        # one level: listed before any is unpacked, so what the inner archives hold stays packed (no zip quines)
        inner = sorted(p for p in staging.rglob("*") if is_archive(p.name) and archive_stem(p.name) and p.is_file())
        for path in inner:
            _unpack_inner(archive, staging, path)
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


def _unpack_inner(archive: Path, staging: Path, inner: Path) -> None:
    """Unpack ``inner``, found in the tree unpacked from ``archive`` into ``staging``, beside it, then remove it."""
    dest = inner.with_name(archive_stem(inner.name))
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise ExtractError(f"{archive.name} holds {inner.relative_to(staging).as_posix()} beside "
                           f"{dest.relative_to(staging).as_posix()}, which is not an empty folder, so unpacking the "
                           f"inner archive there would mix the two: unpack {archive.name} by hand and pass the folder "
                           "with --from.")
    try:
        _unpack(inner, dest)
    except ExtractError as exc:  # name the archive the user passed, not the hidden staging folder
        shown = f"{inner.relative_to(staging).as_posix()} (inside {archive})"
        raise ExtractError(str(exc).replace(str(inner), shown)) from None
    inner.unlink()


def _unpack(archive: Path, dest: Path) -> None:
    """Check every member of ``archive``, then write the regular files and folders under ``dest``."""
    if not is_archive(archive.name):
        raise ExtractError(f"{archive} is not a .zip, .tar, .tar.gz, .tgz or .7z archive: pass an archive or a "
                           "folder.")
    if archive.name.lower().endswith(".7z"):
        from pipeline.data.sevenzip import unpack_7z  # py7zr only for a .7z: prediction may lack it (Kaggle's image)

        unpack_7z(archive, dest)
        return
    try:
        with _members(archive) as members:
            safe = [(_safe_relpath(archive, name, kind), kind, size, opener) for name, kind, size, opener in members]
            _check_tree(archive, [(rel, kind) for rel, kind, _, _ in safe if rel is not None])
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
                           f"{human_size(free)} free, and {human_size(FREE_SPACE_MARGIN)} is kept spare, so nothing "
                           "was unpacked: free some space or point --data-dir at a larger disk, then run the same "
                           "command again.")


def _copy_member(src: IO[bytes], dst: IO[bytes], declared: int, archive: Path, name: str) -> None:
    """Copy a member's bytes, never more than its header ``declared`` (zipfile and tarfile stop there too)."""
    left = declared
    while chunk := src.read(min(_CHUNK, left + 1)):
        if len(chunk) > left:
            raise _oversized(archive, name, declared)
        dst.write(chunk)
        left -= len(chunk)


def _oversized(archive: Path, name: str, declared: int) -> ExtractError:
    return ExtractError(f"{archive} member {name!r} holds more than the {declared:,} bytes its header declares; "
                        "refusing to unpack it: check where the archive came from.")


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
    long = next((part for part in rel.parts if len(part.encode()) > NAME_MAX), None)
    if long is not None:
        raise ExtractError(f"{archive} member {name[:60]!r}... has a name of {len(long.encode())} bytes, over the "
                           f"{NAME_MAX} a file name may have here; refusing to unpack it: unpack it by hand, renaming "
                           "the file, and pass the folder with --from.")
    return None if norm == "." or rel.parts[0] == "__MACOSX" else rel


NAME_MAX = 255  # bytes in one file or folder name (ext4, XFS, APFS, NTFS)


def _check_tree(archive: Path, members: list[tuple[PurePosixPath, str]]) -> None:
    """ExtractError when a file member is also a folder of another member (``train/x`` and ``train/x/cat.1.jpg``)."""
    files = {rel for rel, kind in members if kind == "file"}
    for rel, kind in members:
        clash = next((parent for parent in rel.parents if parent in files), rel if kind == "dir" and rel in files
                     else None)
        if clash is not None:
            raise ExtractError(f"{archive} holds a file {str(clash)!r} and also {str(rel)!r} inside a folder of that "
                               "name, which no disk can hold; refusing to unpack it: check where the archive came "
                               "from.")
