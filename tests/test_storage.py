"""A full disk and a read-only data folder, for real: the pipeline runs with its data folder on a
small (or read-only) tmpfs in a private namespace (see tests/tmpfs.py) and must end with one line."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from tests.conftest import SAMPLE
from tests.httpserver import serve_dir
from tests.tmpfs import pipeline_cmd, run_on_tmpfs


def one_line(result) -> str:
    """The single line the command printed, after checking it printed only that and no traceback."""
    text = (result.stdout + result.stderr).strip()
    assert "Traceback" not in text, text[-3000:]
    assert len(text.splitlines()) == 1, text[-3000:]
    return text


@pytest.fixture
def www(tmp_path):
    """A served folder holding the bundled sample's train.zip (2.5 MB)."""
    folder = tmp_path / "www"
    folder.mkdir()
    shutil.copy(SAMPLE / "train.zip", folder / "train.zip")
    return folder


def test_a_full_disk_during_download_keeps_the_part_and_says_how_to_resume(tmp_path, www):
    data = tmp_path / "data"
    with serve_dir(www) as server:
        result = run_on_tmpfs(pipeline_cmd("download", "--url", server.url("train.zip"), "--data-dir", data,
                                           "--no-progress"), folder=data, size="1m", cwd=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert "No space left on the device while downloading train.zip" in line and "resumes" in line
    part = result.snapshot / "raw" / "train.zip.part"
    assert f"({part.stat().st_size:,} bytes) is kept" in line
    assert 0 < part.stat().st_size < (www / "train.zip").stat().st_size
    assert (www / "train.zip").read_bytes().startswith(part.read_bytes())  # a true prefix: a rerun resumes it


@pytest.mark.parametrize("how", ["--url", "--from"])
def test_a_read_only_data_folder_is_one_line(tmp_path, www, how):
    data = tmp_path / "data"
    with serve_dir(www) as server:
        source = server.url("train.zip") if how == "--url" else www / "train.zip"
        result = run_on_tmpfs(pipeline_cmd("download", how, source, "--data-dir", data, "--no-progress"),
                              folder=data, size="100m", read_only=True, cwd=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"error: Cannot write {data}/") and "(Read-only file system): the folder is read-only; " \
        "point --data-dir / --runs-dir at a writable folder." in line


def test_running_out_of_space_while_unpacking_removes_the_partly_unpacked_folder(tmp_path):
    """Room for the bytes but for only 40 files (tmpfs nr_inodes): the free-space check passes, the disk fills."""
    data = tmp_path / "data"
    result = run_on_tmpfs(pipeline_cmd("download", "--from", SAMPLE / "train.zip", "--data-dir", data,
                                       "--no-progress"), folder=data, size="100m", nr_inodes=40, cwd=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert f"No space left on the device while unpacking train.zip into {data / 'extracted'}" in line
    assert "removed" in line
    assert list((result.snapshot / "extracted").iterdir()) == []  # no .train.partial, no train


def test_an_archive_larger_than_the_free_space_is_refused_before_unpacking(tmp_path):
    data = tmp_path / "data"
    result = run_on_tmpfs(pipeline_cmd("download", "--from", SAMPLE / "train.zip", "--data-dir", data,
                                       "--no-progress"), folder=data, size="1m", cwd=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    with zipfile.ZipFile(SAMPLE / "train.zip") as z:
        declared = sum(i.file_size for i in z.infolist()) / 2**20
    assert f"train.zip unpacks to {declared:.1f} MiB but the disk holding {data} has 1.0 MiB free" in line
    assert list(result.snapshot.iterdir()) == []  # nothing was written, not even extracted/
