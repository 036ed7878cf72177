"""The decoded-image cache: every photo decoded once per size, kept as uint8 in a memory-mapped file.

Layout, one folder per base size under ``data/cache/<size>/``:

- ``pixels.u8``: rows of ``size x size x 3`` uint8, appended as photos are decoded;
- ``index.csv``: ``path,file_size,mtime_ns,row`` for every row that is complete.

A row counts only once the index names it, and the index is rewritten atomically after the
pixels are flushed, so an interrupted build loses at most the unindexed rows and the next build
resumes. A photo whose size or modification time changed is decoded again into a new row; a
photo that cannot be decoded is reported and not cached. Hand-written because no library keys a
memory-mapped array by source file and size this way; numpy's memmap does the storage.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.fileio import write_csv
from pipeline.images import decode_resized
from pipeline.progress import track

_logger = logging.getLogger(__name__)
_INDEX_COLUMNS = ["path", "file_size", "mtime_ns", "row"]


@dataclass
class BuildReport:
    """What a build did: rows decoded now, rows reused, and files that failed (path -> reason)."""

    decoded: int = 0
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def _decode_or_error(path: str, size: int):
    try:
        return path, decode_resized(path, size), ""
    except DataError as exc:
        return path, None, str(exc)


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
        self.row_bytes = self.size * self.size * 3
        self._index: dict[str, tuple[int, int, int]] | None = None
        self._array: np.ndarray | None = None
        self._array_rows = 0

    # ---- reading -------------------------------------------------------------------------
    def _load_index(self) -> dict[str, tuple[int, int, int]]:
        if self._index is None:
            self._index = {}
            if self.index_path.exists():
                df = pd.read_csv(self.index_path)
                self._index = {r.path: (int(r.file_size), int(r.mtime_ns), int(r.row))
                               for r in df.itertuples(index=False)}
        return self._index

    def _valid_row(self, path: str) -> int | None:
        entry = self._load_index().get(path)
        if entry is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return entry[2] if (st.st_size, st.st_mtime_ns) == entry[:2] else None

    def get(self, path: str) -> np.ndarray | None:
        """The cached pixels of ``path`` (a read-only view), or None if absent or stale."""
        row = self._valid_row(str(path))
        if row is None:
            return None
        if self._array is None or row >= self._array_rows:
            rows = self.pixels_path.stat().st_size // self.row_bytes
            self._array = np.memmap(self.pixels_path, dtype=np.uint8, mode="r",
                                    shape=(rows, self.size, self.size, 3))
            self._array_rows = rows
        return self._array[row]

    def __getstate__(self):  # loader workers re-open the memory map themselves
        state = self.__dict__.copy()
        state["_array"], state["_array_rows"] = None, 0
        return state

    # ---- building ------------------------------------------------------------------------
    def build(self, paths: Iterable[str | Path], *, workers: int | None = None, progress: bool = False,
              flush_every: int = 256) -> BuildReport:
        """Decode every photo in ``paths`` that is not cached yet (or changed since).

        Args:
            paths: the photos to have cached.
            workers: decoding processes (default: all cores).
            progress: show a progress bar.
            flush_every: rows between index checkpoints (what an interrupt can lose at most).
        """
        index = self._load_index()
        paths = list(dict.fromkeys(str(p) for p in paths))
        todo = [p for p in paths if self._valid_row(p) is None]
        report = BuildReport(reused=len(paths) - len(todo))
        if not todo:
            return report
        self.dir.mkdir(parents=True, exist_ok=True)
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
                    index[path] = (st.st_size, st.st_mtime_ns, next_row)
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

    def _save_index(self, f) -> None:
        f.flush()
        os.fsync(f.fileno())
        rows = [(p, *v) for p, v in self._load_index().items()]
        write_csv(self.index_path, pd.DataFrame(rows, columns=_INDEX_COLUMNS))
