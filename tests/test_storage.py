"""A full disk and a read-only data folder, for real: the pipeline runs with its data folder on a
small (or read-only) tmpfs in a private namespace (see tests/tmpfs.py) and must end with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile

import pandas as pd
import pytest

from tests.conftest import SAMPLE
from tests.httpserver import serve_dir
from tests.tmpfs import REPO, pipeline_cmd, run_on_tmpfs


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


TINY_TRAIN = ("train", "--arch", "lenet", "--img-size", "32", "--batch-size", "32", "--workers", "0", "--patience",
              "0", "--no-progress", "--run-name", "r")


@pytest.mark.slow  # one of the longest end-to-end runs (issue 28: the default suite under 10 min)
def test_a_full_disk_during_training_is_one_line_and_the_run_resumes(sample_data, tmp_path):
    """Before, torch's own 'inline_container.cc ... unexpected pos' traceback."""
    runs = tmp_path / "runs"
    result = run_on_tmpfs(pipeline_cmd(*TINY_TRAIN, "--epochs", "30", "--folds", "0", "--data-dir", sample_data,
                                       "--runs-dir", runs), folder=runs, size="1200k", cwd=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"error: No space left on the device while writing {runs / 'r'}/") and \
        "files already complete are kept" in line
    kept = result.snapshot / "r"
    assert not list(kept.rglob(".*.tmp"))  # no half-written file left behind
    import torch

    last = torch.load(kept / "fold0" / "last.pt", weights_only=False)  # the last complete state loads
    best = torch.load(kept / "fold0" / "best.pt", weights_only=False)
    metrics = pd.read_csv(kept / "metrics.csv")
    assert metrics.epoch.max() >= last["epoch"] >= best["epoch"] >= 0

    shutil.copytree(kept, tmp_path / "freed" / "r")  # space freed: the same run resumes where it stopped
    done = subprocess.run(pipeline_cmd(*TINY_TRAIN, "--epochs", "30", "--folds", "0", "--data-dir", sample_data,
                                       "--runs-dir", tmp_path / "freed", "--resume"),
                          capture_output=True, text=True, cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = pd.read_csv(tmp_path / "freed" / "r" / "metrics.csv")
    assert sorted(metrics.epoch) == list(range(30))


def test_a_read_only_runs_folder_is_one_line(sample_data, tmp_path):
    runs = tmp_path / "runs"
    result = run_on_tmpfs(pipeline_cmd(*TINY_TRAIN, "--epochs", "1", "--data-dir", sample_data, "--runs-dir", runs),
                          folder=runs, size="10m", read_only=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "(Read-only file system): the folder is read-only" in one_line(result)


def test_an_image_cache_larger_than_the_disk_is_refused_up_front(data_copy, tmp_path):
    """Before, --img-size 100000 decoded for 90 s and then set off the out-of-memory killer."""
    cache = data_copy / "cache"
    result = run_on_tmpfs(pipeline_cmd(*TINY_TRAIN[:-1], "big", "--img-size", "512", "--epochs", "1",
                                       "--data-dir", data_copy, "--runs-dir", tmp_path / "runs"),
                          folder=cache, size="20m", cwd=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert "--img-size 512 needs a 569.5 MiB image cache for 600 photos but" in line and "--no-cache" in line
    assert list(result.snapshot.iterdir()) == []  # nothing was decoded
