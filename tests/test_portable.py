"""Portable runs: photos keyed by their place in the data folder, so a run folder moved elsewhere predicts, runs
trained in two data folders blend, and `pipeline predict --test-dir` works from the run folders alone (a read-only
competition folder, nothing written into it or into the runs)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.download import download
from pipeline.rundir import RunDir
from pipeline.train.session import train
from tests.conftest import SAMPLE, tiny_config
from tests.test_cli import invoke

REDUX = "dogs-vs-cats-redux-kernels-edition"


def downloaded(root: Path, run_name: str = "tiny", **overrides) -> tuple[Path, Path]:
    """A data folder made by `pipeline download` from the bundled sample (its photos unpacked inside it) and a
    tiny run trained on it: ``(data folder, run folder)``."""
    data = root / "data"
    download(competition=REDUX, from_paths=[SAMPLE / "train.zip", SAMPLE / "test.zip"], data_dir=data, n_folds=3,
             progress=False, workers=1)
    train(tiny_config(data, root / "runs", run_name=run_name, **({"epochs": 1} | overrides)))
    return data, root / "runs" / run_name


def read_only_copy(src: Path, dest: Path) -> Path:
    """``src``'s files copied to ``dest`` and made read-only (as /kaggle/input is)."""
    shutil.copytree(src, dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    return dest


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def place_a(tmp_path_factory) -> tuple[Path, Path]:
    return downloaded(tmp_path_factory.mktemp("place-a"))


@pytest.fixture(scope="module")
def place_b(tmp_path_factory) -> tuple[Path, Path]:
    return downloaded(tmp_path_factory.mktemp("place-b"), run_name="other", seed=1)


def test_a_run_keys_its_photos_by_their_place_in_the_data_folder(place_a):
    data, run = place_a
    folds, oof = pd.read_csv(run / "folds.csv"), pd.read_csv(run / "oof.csv")
    assert folds.path.str.startswith("extracted/train/").all() and oof.path.str.startswith("extracted/").all()
    assert json.loads((run / "config.json").read_text())["photo_root"] == str(data)
    located = RunDir(run).read_folds()  # where the photos are, for training and the report
    assert located.path.map(os.path.isfile).all()
    assert sorted(located.path) == sorted(pd.read_csv(data / "folds.csv").path)


def test_a_moved_run_folder_predicts_from_the_competition_folder_alone(place_a, tmp_path):
    data, run = place_a
    local = invoke("predict", "--run", run, "--test", data / "test.csv", "--out", tmp_path / "local.csv",
                   "--no-progress")
    assert local.exit_code == 0, local.output
    moved = Path(shutil.copytree(run, tmp_path / "elsewhere" / "moved"))
    for name in ("test_probs.csv", "test_probs.json"):
        (moved / name).unlink()
    hidden = data.rename(data.with_name("data-gone"))  # no training data where the run was trained
    try:
        competition = read_only_copy(SAMPLE, tmp_path / "input")  # test.zip and train.zip
        before, runs_before = snapshot(competition), snapshot(moved)
        work = tmp_path / "working"
        r = invoke("predict", "--run", moved, "--test-dir", competition, "--work-dir", work, "--out",
                   work / "submission.csv", "--no-progress")
    finally:
        hidden.rename(data)
    assert r.exit_code == 0, r.output
    assert "catalogued 100 test photos" in r.output and "will take about" in r.output
    assert (work / "submission.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert snapshot(competition) == before and snapshot(moved) == runs_before  # nothing written into either
    assert (work / "test.csv").exists() and (work / "cache").is_dir()  # the catalogue and cache: the working folder


def test_runs_trained_in_two_data_folders_blend(place_a, place_b, tmp_path):
    (data_a, run_a), (data_b, run_b) = place_a, place_b
    assert data_a != data_b
    r = invoke("predict", "--run", run_a, "--run", run_b, "--test", data_a / "test.csv", "--tta", "none",
               "--out", tmp_path / "blend.csv", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "out-of-fold scores (fit blend" in r.output
    note = json.loads((tmp_path / "blend.json").read_text())
    assert len(note["weights"]) == 2 and sum(note["weights"]) == pytest.approx(1)
    assert len(pd.read_csv(tmp_path / "blend.csv")) == 100


def test_a_run_made_before_photos_were_keyed_still_loads_and_blends(place_a, place_b, tmp_path):
    """Runs of earlier versions hold the catalogue's paths and no photo_root; they are keyed on reading."""
    (data_a, run_a), (_, run_b) = place_a, place_b
    old = Path(shutil.copytree(run_a, tmp_path / "runs" / "old"))
    config = json.loads((old / "config.json").read_text())
    del config["photo_root"]
    (old / "config.json").write_text(json.dumps(config))
    for name in ("folds.csv", "oof.csv"):
        table = pd.read_csv(old / name)
        table.assign(path=[str(data_a / p) for p in table.path]).to_csv(old / name, index=False)
    folds = RunDir(old).read_folds()
    assert folds.path.map(os.path.isabs).all() and folds.path.map(os.path.isfile).all()
    assert RunDir(old).read_oof().key.equals(RunDir(run_a).read_oof().key)
    r = invoke("predict", "--run", old, "--run", run_b, "--test", data_a / "test.csv", "--tta", "none",
               "--out", tmp_path / "blend.csv", "--no-progress")
    assert r.exit_code == 0, r.output


def test_a_working_folder_inside_the_competition_folder_is_refused_in_one_line(place_a, tmp_path):
    competition = Path(shutil.copytree(SAMPLE, tmp_path / "input"))
    before = snapshot(competition)
    r = invoke("predict", "--run", place_a[1], "--test-dir", competition, "--work-dir", competition / "work",
               "--no-progress")
    assert r.exit_code == 1 and "lies inside --test-dir" in r.output and len(r.output.strip().splitlines()) == 1
    assert snapshot(competition) == before
