"""The decoded-image cache: every photo decoded once per size, kept as uint8 in a memory-mapped file.

Layout, one folder per base size under ``data/cache/<size>/``:

- ``pixels.u8``: rows of ``size x size x 3`` uint8, appended as photos are decoded;
- ``index.csv``: ``path,file_size,mtime_ns,row,crc32`` for every row that is complete;
- ``.lock``: an advisory file lock held by whoever builds or appends (several trainings, or the
  processes of one torchrun job, may share a data folder);
- ``suspect.txt``: photos whose row failed its checksum when read; the next build redoes them.

A row counts only once the index names it, and the index is rewritten atomically after the
pixels are flushed, so an interrupted build loses at most the unindexed rows and the next build
resumes. Readers never need the lock: they see only indexed rows, which are never rewritten.
Each row carries a CRC-32 of its pixels, checked the first time a process reads the row, so a
shuffled index or overwritten pixels are caught (the photo is then decoded from disk instead); a
truncated ``pixels.u8`` loses only the rows past its end, which the next build decodes again.

Hand-written because no library keys a memory-mapped array by source file and size this way;
numpy's memmap does the storage, filelock the locking and zlib the checksums.
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from pipeline.data.images import decode_resized
from pipeline.errors import DataError
from pipeline.fileio import human_size, write_csv
from pipeline.progress import track

_logger = logging.getLogger(__name__)
_INDEX_COLUMNS = ["path", "file_size", "mtime_ns", "row", "crc32"]


@dataclass
class BuildReport:
    """What a build did: rows decoded now, rows reused, rows repaired, and files that failed (path -> reason)."""

    decoded: int = 0
    reused: int = 0
    repaired: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def _decode_or_error(path: str, size: int):
    try:
        return path, decode_resized(path, size), ""
    except DataError as exc:
        return path, None, str(exc)


def _crc(pixels: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(pixels).data)


class DecodedCache:
    """Decoded photos of one base size.

    Args:
        root: the cache folder (``data/cache``); this size lives in ``root/<size>/``.
        size: the side of the stored square images.
    """

    def __init__(self, root: str | Path, size: int):
        self.size = int(size)
        self.dir = Path(root) / str(self.size)
        self.pixels_path = self.dir / "pixels.u8"
        self.index_path = self.dir / "index.csv"
        self.suspect_path = self.dir / "suspect.txt"
        self.row_bytes = self.size * self.size * 3
        self._index: dict[str, tuple[int, int, int, int]] | None = None
        self._array: np.ndarray | None = None
        self._array_rows = 0
        self._checked: set[int] = set()

    @staticmethod
    def bytes_for(size: int, n_images: int) -> int:
        """Disk bytes ``n_images`` photos take at ``size``."""
        return int(size) * int(size) * 3 * int(n_images)

    # ---- reading -------------------------------------------------------------------------
    def _load_index(self) -> dict[str, tuple[int, int, int, int]]:
        if self._index is None:
            self._index = {}
            if self.index_path.exists():
                df = pd.read_csv(self.index_path)
                if "crc32" in df.columns:  # a cache from before checksums is rebuilt, never trusted
                    self._index = {r.path: (int(r.file_size), int(r.mtime_ns), int(r.row), int(r.crc32))
                                   for r in df.itertuples(index=False)}
        return self._index

    def _entry(self, path: str) -> tuple[int, int] | None:
        """``(row, crc)`` of an up-to-date row for ``path``, or None if absent or stale."""
        entry = self._load_index().get(path)
        if entry is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return entry[2:] if (st.st_size, st.st_mtime_ns) == entry[:2] else None

    def uncached(self, paths: Iterable[str | Path]) -> int:
        """How many of ``paths`` a build would decode and append (absent or stale)."""
        return sum(self._entry(p) is None for p in dict.fromkeys(str(p) for p in paths))

    def _rows_on_disk(self) -> int:
        return self.pixels_path.stat().st_size // self.row_bytes if self.pixels_path.exists() else 0

    def get(self, path: str) -> np.ndarray | None:
        """The cached pixels of ``path`` (a read-only view), or None if absent, stale or damaged."""
        path = str(path)
        entry = self._entry(path)
        if entry is None:
            return None
        row, crc = entry
        if self._array is None or row >= self._array_rows:
            rows = self._rows_on_disk()
            if row >= rows:
                self._suspect(path, f"row {row} lies past the end of {self.pixels_path} (truncated?)")
                return None
            self._array = np.memmap(self.pixels_path, dtype=np.uint8, mode="r",
                                    shape=(rows, self.size, self.size, 3))
            self._array_rows = rows
        pixels = self._array[row]
        if row not in self._checked:
            if _crc(pixels) != crc:
                self._suspect(path, f"row {row} fails its checksum")
                return None
            self._checked.add(row)
        return pixels

    def _suspect(self, path: str, why: str) -> None:
        """Note a damaged row: warn, and list it for the next build to decode again."""
        _logger.warning("image cache %s: %s for %s; decoding the photo instead (the next training repairs the "
                        "cache)", self.dir, why, path)
        self._load_index().pop(path, None)
        try:
            with open(self.suspect_path, "a", encoding="utf-8") as f:
                f.write(path + "\n")
        except OSError:
            pass

    def __getstate__(self):  # loader workers re-open the memory map themselves
        state = self.__dict__.copy()
        state["_array"], state["_array_rows"], state["_checked"] = None, 0, set()
        return state

    # ---- building ------------------------------------------------------------------------
    def build(self, paths: Iterable[str | Path], *, workers: int | None = None, progress: bool = False,
              flush_every: int = 256) -> BuildReport:
        """Decode every photo in ``paths`` that is not cached yet (or changed, or damaged since).

        Holds the cache's lock throughout, so processes building the same size at once take turns
        (the second finds the first one's rows and decodes nothing).

        Args:
            paths: the photos to have cached.
            workers: decoding processes (default: all cores).
            progress: show a progress bar.
            flush_every: rows between index checkpoints (what an interrupt can lose at most).
        """
        paths = list(dict.fromkeys(str(p) for p in paths))
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.dir / ".lock"):
            self._index, self._array, self._checked = None, None, set()  # what other processes wrote counts
            report = BuildReport(repaired=self._repair())
            return self._append(paths, report, workers, progress, flush_every)

    def _repair(self) -> int:
        """Drop index entries whose rows are gone (a truncated file) or listed as damaged and fail
        their checksum again; return how many were dropped. Called under the lock."""
        index = self._load_index()
        rows = self._rows_on_disk()
        if not index and rows:  # no row is referenced (a cache from before checksums): start afresh
            os.truncate(self.pixels_path, 0)
            rows = 0
        bad = {p for p, e in index.items() if e[2] >= rows}
        if self.suspect_path.exists():
            listed = set(self.suspect_path.read_text(encoding="utf-8").splitlines()) & set(index)
            if listed - bad:
                pixels = np.memmap(self.pixels_path, dtype=np.uint8, mode="r", shape=(rows, self.size, self.size, 3))
                bad |= {p for p in listed - bad if _crc(pixels[index[p][2]]) != index[p][3]}
                del pixels
        if bad or self.suspect_path.exists():
            if bad:
                _logger.warning("image cache %s: %d damaged or missing rows will be decoded again", self.dir, len(bad))
            for p in bad:
                del index[p]
            self._save_index()
            self.suspect_path.unlink(missing_ok=True)
        return len(bad)

    def _append(self, paths: list[str], report: BuildReport, workers: int | None, progress: bool,
                flush_every: int) -> BuildReport:
        index = self._load_index()
        todo = [p for p in paths if self._entry(p) is None]
        report.reused = len(paths) - len(todo)
        if not todo:
            return report
        stats = {p: os.stat(p) for p in todo if os.path.exists(p)}
        for p in todo:
            if p not in stats:
                report.failed[p] = "file not found"
        todo = [p for p in todo if p in stats]
        workers = workers or os.cpu_count() or 1
        decode = partial(_decode_or_error, size=self.size)
        pool = ProcessPoolExecutor(workers) if workers > 1 and len(todo) > 32 else None
        results = pool.map(decode, todo, chunksize=16) if pool else map(decode, todo)
        with open(self.pixels_path, "ab") as f:
            next_row = f.tell() // self.row_bytes
            f.truncate(next_row * self.row_bytes)  # drop a torn row left by an interrupt
            f.seek(next_row * self.row_bytes)
            pending = 0
            try:
                for path, img, error in track(results, total=len(todo), enabled=progress,
                                              description=f"cache {self.size}px"):
                    if img is None:
                        report.failed[path] = error
                        continue
                    f.write(np.ascontiguousarray(img).tobytes())
                    st = stats[path]
                    index[path] = (st.st_size, st.st_mtime_ns, next_row, _crc(img))
                    next_row += 1
                    report.decoded += 1
                    pending += 1
                    if pending >= flush_every:
                        self._save_index(f)
                        pending = 0
            finally:
                self._save_index(f)
                if pool:
                    pool.shutdown(cancel_futures=True)
        self._array = None
        for path, reason in report.failed.items():
            _logger.warning("not cached: %s (%s)", path, reason)
        return report

    def _save_index(self, f=None) -> None:
        """Write the index atomically, after the pixels it names are on disk (``f``: the pixels file)."""
        if f is not None:
            f.flush()
            os.fsync(f.fileno())
        rows = [(p, *v) for p, v in self._load_index().items()]
        write_csv(self.index_path, pd.DataFrame(rows, columns=_INDEX_COLUMNS))


def open_cache(data_dir: str | Path, paths, base_size: int, *, enabled: bool = True, progress: bool = False):
    """The decoded-image cache ``data_dir/cache`` for ``paths`` at ``base_size`` (built as needed),
    or None when ``enabled`` is False."""
    if not enabled:
        return None
    cache = DecodedCache(Path(data_dir) / "cache", base_size)
    report = cache.build(paths, progress=progress)
    if report.failed:
        _logger.warning("%d images could not be cached and will fail when read", len(report.failed))
    return cache


def cache_room(data_dir: str | Path, base: int, n_images: int) -> tuple[int, int, Path]:
    """``(bytes needed, bytes free, folder probed)`` for ``n_images`` more photos at ``base`` px in the decoded-image
    cache of ``data_dir`` (the nearest existing folder on its way is the one asked)."""
    cache_dir = Path(data_dir) / "cache"
    probe = next(p for p in (cache_dir, *cache_dir.parents) if p.exists())
    return DecodedCache.bytes_for(base, n_images), shutil.disk_usage(probe).free, probe


def cache_shortfall(data_dir: str | Path, paths, base: int) -> str | None:
    """Why the test photos cannot go into the decoded-image cache (the disk has less room than the photos not
    cached yet need), or None when they fit. Prediction then decodes them on the fly."""
    missing = DecodedCache(Path(data_dir) / "cache", base).uncached(paths)
    need, free, probe = cache_room(data_dir, base, missing)
    if need <= free:
        return None
    return (f"the image cache needs {human_size(need)} more for {missing} test photos at {base} px but {probe} has "
            f"{human_size(free)} free: decoding them on the fly instead (slower; free some space to cache them)")
