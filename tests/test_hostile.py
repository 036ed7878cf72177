"""This round's hostile pass (issue 20): each case reproduced, then one clear line (or the right result), and no
refused run leaves a folder behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.train.engine import Diverged, FitState, check_finite
from pipeline.train.session import train
from tests.conftest import tiny_config
from tests.test_cli import invoke

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "lenet", "--img-size", "32", "--batch-size", "32", "--workers", "0", "--patience", "0",
        "--no-progress", "--tracker", "none"]


def one_line(r) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    return r.output


# ---- 1. a corrupt run folder -------------------------------------------------------------------------------
@pytest.fixture
def runs_with_a_corrupt_one(tiny_run, tmp_path) -> Path:
    """``good`` (the tiny run), ``cut`` (config.json cut off mid-write), ``list`` (a JSON list), ``nocv`` (cv.json
    cut off): the corrupt ones are the newest."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "good")
    for name, config in (("cut", '{"recipe": '), ("list", "[1,2]")):
        (runs / name).mkdir()
        (runs / name / "config.json").write_text(config)
    shutil.copytree(tiny_run, runs / "nocv", ignore=shutil.ignore_patterns("*.pt"))
    (runs / "nocv" / "cv.json").write_text('{"run": "nocv", "folds"')
    return runs


def test_one_corrupt_run_folder_no_longer_breaks_the_listing(runs_with_a_corrupt_one):
    """Before: `pipeline runs` ended in a JSONDecodeError (or AttributeError for a list) traceback."""
    r = invoke("runs", "--runs-dir", runs_with_a_corrupt_one)
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if line.startswith("│")}
    assert set(rows) == {"good", "cut", "list", "nocv"}
    assert "unreadable: config.json is not valid JSON" in rows["cut"]
    assert "unreadable: config.json holds a list, not the object of a run" in rows["list"]
    assert "unreadable: cv.json is not valid JSON" in rows["nocv"]
    assert "done" in rows["good"]


@pytest.mark.parametrize("name", ["cut", "list"])
def test_report_predict_and_resume_of_a_corrupt_run_are_one_line(runs_with_a_corrupt_one, sample_data, tmp_path,
                                                                  name):
    runs = runs_with_a_corrupt_one
    for args in (["report", name], ["predict", "--run", name, "--test", sample_data / "test.csv", "--no-progress"],
                 ["train", *TINY, "--run-name", name, "--resume", "--data-dir", sample_data]):
        out = one_line(invoke(*args, "--runs-dir", runs))
        assert f"Run {name} cannot be read: its config.json" in out, (args, out)


def test_predict_without_run_takes_the_newest_readable_finished_run(runs_with_a_corrupt_one, sample_data, tmp_path):
    r = invoke("predict", "--runs-dir", runs_with_a_corrupt_one, "--test", sample_data / "test.csv", "--out",
               tmp_path / "sub.csv", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "run good (the newest finished run)" in r.output


# ---- 2 and 3. values the checks let through -------------------------------------------------------------------
@pytest.mark.parametrize("args,expected", [
    (["--seed", "-1"], "--seed must be between 0 and 4,000,000, got -1."),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number, got inf."),
    (["--warmup-epochs", "inf"], "--warmup-epochs must be a finite number, got inf."),
    (["--lr", "nan"], "--lr must be a finite number, got nan."),
    (["--img-size", "0"], "--img-size must be between 32 and 1024 pixels, got 0."),
])
def test_values_training_cannot_take_are_one_line_before_any_work(data_copy, tmp_path, args, expected):
    """Before: OverflowError in the optimizer (inf warm-up), a NaN loss then scikit-learn's 'Input contains NaN'
    (inf weight decay), numpy's seed error (-1), and --img-size 0 trained at 64 px without a word."""
    r = invoke("train", *TINY, *args, "--run-name", "never", "--data-dir", data_copy, "--runs-dir", tmp_path / "runs")
    assert expected in one_line(r)
    assert not (tmp_path / "runs" / "never").exists()


@pytest.mark.parametrize("field,value,expected", [("warmup_epochs", "inf", "--warmup-epochs must be a finite"),
                                                  ("weight_decay", "inf", "--weight-decay must be a finite"),
                                                  ("img_size", "0", "--img-size must be between 32 and 1024")])
def test_the_same_values_in_a_recipe_file(data_copy, tmp_path, field, value, expected):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'arch = "lenet"\n{field} = {value}\n')
    r = invoke("train", "--recipe", recipe, "--workers", "0", "--no-progress", "--tracker", "none", "--run-name",
               "never", "--data-dir", data_copy, "--runs-dir", tmp_path / "runs")
    assert expected in one_line(r)
    assert not (tmp_path / "runs" / "never").exists()


def test_a_diverging_loss_stops_the_fold_in_one_line_and_leaves_no_empty_run(data_copy, tmp_path):
    r = invoke("train", *TINY, "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3", "--folds", "0", "--run-name",
               "nan", "--data-dir", data_copy, "--runs-dir", tmp_path / "runs")
    out = one_line(r)
    assert "Fold 0, epoch 1: the training loss is nan and the weights diverged" in out and "lower --lr" in out
    assert not (tmp_path / "runs" / "nan").exists()  # nothing was trained: the name stays free


def test_a_later_divergence_keeps_the_last_good_epoch():
    state = FitState(fold=2, epochs=10, model=None, net=None, optimizer=None, scheduler=None, amp=None,
                     runtime=None, epoch=4)
    check_finite(state, 0.41, "training")  # a finite loss passes
    with pytest.raises(Diverged, match=r"Fold 2, epoch 5: the validation loss is inf .* Last good epoch: epoch 4 "
                                       r"\(its checkpoints are kept\)"):
        check_finite(state, float("inf"), "validation")


# ---- 4. a tracker store that cannot work ----------------------------------------------------------------------
@pytest.mark.parametrize("uri,expected", [("bogus://x", "it knows no store of the scheme 'bogus://'"),
                                          ("http://127.0.0.1:9/", "Nothing answers at 127.0.0.1:9")])
def test_a_bad_mlflow_tracking_uri_is_one_line_before_any_work(data_copy, tmp_path, monkeypatch, uri, expected):
    """Before: MLflow's traceback (bogus://), or four minutes of retries and then a traceback (nothing on :9)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = invoke("train", *TINY[:-2], "--tracker", "mlflow", "--run-name", "never", "--data-dir", data_copy,
               "--runs-dir", tmp_path / "runs")
    out = one_line(r)
    assert expected in out and "--tracker tensorboard or none" in out
    assert not (tmp_path / "runs" / "never").exists()


# ---- 5. a refused run leaves no folder --------------------------------------------------------------------------
def test_nproc_3_with_a_batch_3_does_not_divide_is_one_line_and_no_folder(data_copy, tmp_path):
    r = invoke("train", *TINY, "--nproc", "3", "--parallel", "ddp", "--folds", "0", "--run-name", "odd",
               "--data-dir", data_copy, "--runs-dir", tmp_path / "runs")
    assert "--batch-size 32 must be a multiple of 3" in one_line(r)
    assert not (tmp_path / "runs" / "odd").exists()
    r = invoke("train", *TINY, "--nproc", "3", "--parallel", "ddp", "--folds", "0", "--batch-size", "33",
               "--epochs", "1", "--run-name", "odd", "--data-dir", data_copy, "--runs-dir", tmp_path / "runs")
    assert r.exit_code == 0, r.output  # the name is free, and the corrected run trains


# ---- 6. config.json of multi-process runs ----------------------------------------------------------------------
def _pipeline(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                       "HOME": str(cwd)})


@pytest.mark.slow  # one of the longest end-to-end runs (issue 28: the default suite under 10 min)
def test_config_records_the_processes_the_job_and_a_resume_with_another_nproc(data_copy, tmp_path):
    """Before: --nproc 2 runs said processes 1 and job null, and a resume with another --nproc recorded nothing."""
    runs = tmp_path / "runs"
    done = _pipeline("train", *TINY, "--epochs", "1", "--nproc", "2", "--run-name", "two", "--data-dir", data_copy,
                     "--runs-dir", runs, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((runs / "two" / "config.json").read_text())
    assert config["environment"]["processes"] == 2 and config["launch"]["processes"] == 2
    assert config["launch"]["job"]  # the launcher's job id
    assert [s["processes"] for s in config["sessions"]] == [2] and config["sessions"][0]["seconds"] > 0
    cv = json.loads((runs / "two" / "cv.json").read_text())
    epochs = pd.read_csv(runs / "two" / "metrics.csv").groupby("fold").seconds.sum()
    assert cv["seconds"] >= epochs.max()  # the run's time covers its longest fold, launch included

    train(tiny_config(data_copy, runs, run_name="one", epochs=1))
    again = _pipeline("train", *TINY, "--run-name", "one", "--resume", "--nproc", "2", "--data-dir", data_copy,
                      "--runs-dir", runs, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    config = json.loads((runs / "one" / "config.json").read_text())
    assert config["resumes"][-1]["changed"] == {"processes": 2} and config["resumes"][-1]["processes"] == 2
    assert [s["processes"] for s in config["sessions"]] == [1, 2]


# ---- 7. noise ---------------------------------------------------------------------------------------------------
def test_compare_with_a_run_of_constant_predictions_prints_no_numpy_warning(tiny_run, tmp_path):
    from pipeline.report import build_comparison

    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(tiny_run, runs / name, ignore=shutil.ignore_patterns("*.pt"))
    oof = pd.read_csv(runs / "b" / "oof.csv")
    oof.assign(prob_dog=0.5, prob_dog_hflip=0.5).to_csv(runs / "b" / "oof.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before: numpy's RuntimeWarning 'invalid value encountered in divide'
        page = build_comparison([runs / "a", runs / "b"], tmp_path / "c.html").read_text()
    assert "<h1>Compare a vs b</h1>" in page


def test_freeze_bn_without_batchnorm_and_a_warmup_longer_than_the_run_are_said(data_copy, tmp_path, caplog):
    train(tiny_config(data_copy, tmp_path / "runs", run_name="w", freeze_bn=True, epochs=1, warmup_epochs=2.0,
                      folds=[0]))
    said = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "--freeze-bn does nothing: lenet has no BatchNorm layer." in said
    assert "--warmup-epochs 2 is longer than the run (--epochs 1)" in said


def test_no_warning_for_a_recipe_that_means_what_it_says(data_copy, tmp_path, caplog):
    train(tiny_config(data_copy, tmp_path / "runs", run_name="fine", epochs=2, warmup_epochs=1.0, folds=[0]))
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "--" in r.getMessage()]


def test_config_problem_is_refused_for_a_bad_schema(tiny_run, tmp_path):
    from pipeline.rundir import RunDir, RunUnreadable

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.pt"))
    config = json.loads((run / "config.json").read_text())
    for changed, why in (({"schema": 99}, "schema version 99"), ({"schema": None}, "has no schema version")):
        (run / "config.json").write_text(json.dumps(config | changed))
        with pytest.raises(RunUnreadable, match=why):
            RunDir(run).config()
    with pytest.raises(ConfigError, match="is not a run folder"):
        RunDir(tmp_path / "nothing").config()
