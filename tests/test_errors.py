"""storage_error: the errno of a failed write turned into one sentence that says what to do."""

import errno
import os

import pytest

from pipeline.errors import StorageError, is_disk_full, storage_error


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_names_the_file_and_says_to_free_space(code):
    error = storage_error(OSError(code, os.strerror(code), "data/raw/train.zip.part"))
    assert isinstance(error, StorageError) and is_disk_full(OSError(code, "x"))
    assert "while writing data/raw/train.zip.part: free some space and run the same command again" in str(error)


@pytest.mark.parametrize("code, why", [(errno.EROFS, "the folder is read-only"),
                                       (errno.EACCES, "this user may not write there"),
                                       (errno.EPERM, "this user may not write there")])
def test_an_unwritable_folder_says_where_to_point_instead(code, why):
    message = str(storage_error(OSError(code, os.strerror(code), "data/extracted")))
    assert message == (f"Cannot write data/extracted ({os.strerror(code)}): {why}; point --data-dir / --runs-dir "
                       "at a writable folder.")


def test_a_write_error_without_a_file_name_takes_the_path_given():
    assert "while writing runs/x/best.pt:" in str(storage_error(OSError(errno.ENOSPC, "full"), "runs/x/best.pt"))
    assert "while writing a file:" in str(storage_error(OSError(errno.ENOSPC, "full")))


@pytest.mark.parametrize("exc", [OSError(errno.ENOENT, "No such file or directory", "x"), ConnectionResetError()])
def test_other_os_errors_are_left_alone(exc):
    assert storage_error(exc) is None and not is_disk_full(exc)
