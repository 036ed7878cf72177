"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

import errno
import os

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class PipelineError(Exception):
    """Base class: the message is a complete sentence saying what went wrong and what to do.

    ``secondary`` (an attribute set on the instance) marks an error that repeats what another process of the
    same job has said; the command line does not print it again.
    """

    secondary = False


class DownloadError(PipelineError):
    """A file could not be fetched, or failed its checksum."""


class ExtractError(PipelineError):
    """An archive is unsafe or unreadable."""


class DataError(PipelineError):
    """The catalogue, folds or an image is missing or malformed."""


class SubmissionError(PipelineError):
    """A submission file is malformed or does not match the test set."""


class SubmitError(PipelineError):
    """A submission could not be sent (no kaggle CLI, no credentials) or the competition rejected it."""


class ConfigError(PipelineError):
    """An option or a combination of options cannot work (unknown arch, no CUDA, ...)."""


class Interrupted(PipelineError):
    """Ctrl-C during training; the state of the last finished epoch is on disk (the CLI exits with 130)."""


class StorageError(PipelineError):
    """The disk is full, or a folder cannot be written (read-only, no permission)."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError saying the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def storage_error(exc: OSError, path: str | os.PathLike | None = None) -> StorageError | None:
    """The one-line StorageError for a full disk or an unwritable folder; None for any other OSError.

    Args:
        exc: the error a write (or a mkdir, rename, ...) raised.
        path: the file being written, for errors that do not name it (a failed ``write()`` does not).
    """
    where = exc.filename if exc.filename is not None else path
    where = os.fsdecode(where) if isinstance(where, (str, bytes, os.PathLike)) else "a file"
    if exc.errno in DISK_FULL:
        what = "No space left on the device" if exc.errno == errno.ENOSPC else "Disk quota exceeded"
        return StorageError(f"{what} while writing {where}: free some space and run the same command again; "
                            "files already complete are kept.")
    if exc.errno in NOT_WRITABLE:
        why = "the folder is read-only" if exc.errno == errno.EROFS else "this user may not write there"
        return StorageError(f"Cannot write {where} ({exc.strerror}): {why}; point --data-dir / --runs-dir at a "
                            "writable folder.")
    return None
