"""Atomic file writes: write to a temporary name in the same folder, then rename.

Hand-written because it is five lines and no dependency does exactly this with pandas/torch.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import storage_error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A full disk (whatever error the writer raised: torch.save reports it as a RuntimeError) or an
    unwritable folder becomes a one-line StorageError; the earlier ``path`` is left as it was.

    Args:
        path: the final destination. Its folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        error = storage_error(exc, path) if isinstance(exc, OSError) else None
        if error is None and _disk_full(path.parent):  # torch.save says "unexpected pos", not ENOSPC
            error = storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _disk_full(folder: Path, slack: int = 64 << 10) -> bool:
    """Whether the file system of ``folder`` has less than ``slack`` bytes left for this user."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < slack


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, df) -> Path:
    """Atomically write a pandas DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def human_size(n: float) -> str:
    """``1.5 GiB``, ``200.0 MiB``, ``12.0 KiB`` or ``900 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{int(n)} bytes"


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (which test catalogue a run's saved predictions were made for)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


NA_TEXT = ("", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "#N/A")  # what pandas reads as missing by default


def read_id_csv(path: str | os.PathLike, id_column: str = "id"):
    """A CSV whose ``id_column`` is read as text exactly as written (``NaN``, ``007``, `` 12`` stay themselves: a
    file ``NaN.png`` has the id ``NaN``); its other columns as pandas reads them (empty cells are missing)."""
    import pandas as pd

    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={id_column: str}, keep_default_na=False,
                       na_values={c: list(NA_TEXT) for c in columns if c != id_column})
