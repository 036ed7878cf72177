"""Where competitors run the pipeline (issue 19): a notebook cell or a log file (output that is not a terminal),
a time budget, the weights files people have, no network, and a CLI that says what it did."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import ConfigError
from pipeline.models import build_model, load_weights
from pipeline.train.budget import parse_duration, plan_epochs
from pipeline.train.session import train
from tests.conftest import tiny_config
from tests.httpserver import serve_dir
from tests.test_cli import invoke

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pipeline" / "sample"
TINY = ["--arch", "lenet", "--img-size", "32", "--batch-size", "32", "--workers", "0", "--patience", "0",
        "--tracker", "none"]


def to_a_file(args: list, cwd: Path, out: Path) -> tuple[int, list[str]]:
    """``python -m pipeline ARGS > out``: standard output is a file, as under nohup or `| tee`."""
    with open(out, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, stdout=f,
                              stderr=subprocess.PIPE, text=True, timeout=600,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    assert proc.returncode == 0 or proc.stderr, proc.stderr
    return proc.returncode, out.read_text().splitlines()


# ---- output that is not a terminal ------------------------------------------------------------------------
def test_training_into_a_file_writes_a_line_per_epoch_and_per_fold(data_copy, tmp_path):
    """Before, a log file got nothing for minutes, then only the last frame of the progress bars."""
    shutil.rmtree(data_copy / "cache", ignore_errors=True)  # other tests may have built it: build it here
    code, lines = to_a_file(["train", *TINY, "--epochs", "3", "--folds", "0,1", "--data-dir", data_copy,
                             "--runs-dir", tmp_path / "runs", "--run-name", "log"], tmp_path, tmp_path / "log.txt")
    assert code == 0
    epochs = [line for line in lines if line.startswith("run log fold ") and " epoch " in line]
    assert [line.split(":")[0] for line in epochs] == [f"run log fold {k} ({k + 1}/2) epoch {e}/3"
                                                      for k in (0, 1) for e in (1, 2, 3)]
    for line in epochs:
        assert "train loss" in line and "val loss" in line and "img/s" in line and "run ETA" in line
    assert [line for line in lines if line.endswith("done: best val loss") or " done: best val loss " in line]
    assert len([line for line in lines if " done: best val loss " in line]) == 2
    estimate = [line for line in lines if line.startswith("estimate: about ")]
    assert len(estimate) == 1 and lines.index(epochs[0]) < lines.index(estimate[0]) < lines.index(epochs[1])
    assert "epochs left at ~" in estimate[0] and " a fold beyond its epochs)" in estimate[0]
    assert any(line.startswith("cache 40px: 600 done in") for line in lines)  # the cache build, start to end
    assert not any("\x1b[" in line for line in lines)  # no terminal codes
    assert all(line[0] in "┏┡└" for line in lines if "━" in line)  # no progress bar: only the CV table's rules


def test_download_into_a_file_writes_plain_lines(tmp_path):
    with serve_dir(SAMPLE) as server:
        code, lines = to_a_file(["download", "--url", server.url("train.zip"), "--url", server.url("test.zip"),
                                 "--data-dir", tmp_path / "data", "--folds", "3"], tmp_path, tmp_path / "log.txt")
    assert code == 0
    assert any(line.startswith("train.zip: downloading (") for line in lines)
    assert any(line.startswith("train.zip: ") and "/s)" in line for line in lines)  # the end: size, time, speed
    assert any(line.startswith("verify images: 700 done in") for line in lines)


def test_predict_says_which_runs_and_folds_it_blends(tiny_run, sample_data, tmp_path):
    r = invoke("predict", "--runs-dir", tiny_run.parent, "--test", sample_data / "test.csv", "--out",
               tmp_path / "sub.csv", "--no-progress", "--tta", "hflip")
    assert r.exit_code == 0, r.output
    assert "run tiny (the newest finished run): the models of folds 0-2 of 3, with hflip TTA" in r.output
    assert "out-of-fold (with hflip TTA, as the test set is predicted; each photo scored by the fold model that did " \
           "not train on it): accuracy" in " ".join(r.output.split())


def test_predict_for_log_loss_names_each_out_of_fold_log_loss_it_prints(tiny_run, sample_data, tmp_path):
    """Two figures (issue 28: "0.5722", then "calibrated: 0.5811 -> 0.5719"), each saying what it is."""
    import re

    r = invoke("predict", "--runs-dir", tiny_run.parent, "--test", sample_data / "test.csv", "--out",
               tmp_path / "redux.csv", "--no-progress", "--tta", "none", "--format", "redux")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    note = json.loads((tmp_path / "redux.json").read_text())
    blend = re.search(r"each photo scored by the fold model that did not train on it\): accuracy [0-9.]+, log-loss "
                      r"([0-9.]+)", text)
    softened = re.search(r"out-of-fold log-loss \(?([0-9.]+) once softened as the submitted fold mean is", text)
    assert blend and softened, text
    assert float(blend[1]) == round(note["oof"]["log_loss"], 4)
    assert float(softened[1]) == round(note["calibration"]["oof_log_loss_before"], 4)


def test_predict_names_a_run_of_some_folds(data_copy, tmp_path):
    runs = tmp_path / "runs"
    train(tiny_config(data_copy, runs, run_name="some", folds=[0, 1], epochs=1))
    r = invoke("predict", "--run", "some", "--runs-dir", runs, "--test", data_copy / "test.csv", "--out",
               tmp_path / "sub.csv", "--no-progress", "--tta", "hflip")
    assert r.exit_code == 0, r.output
    assert "run some (named): the models of folds 0,1 of 3 (a run of 2 of the split's 3 folds), with hflip TTA" in \
        r.output


# ---- a time budget -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                          ("45", 45), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0s", "5 minutes", "40d"])
def test_bad_durations_are_one_line(text):
    with pytest.raises(ConfigError, match="--time-limit"):
        parse_duration(text)


def test_the_plan_fits_every_fold_and_never_raises_the_epochs():
    # 600 s, 20 spent, an epoch 10 s, 5 s per fold beyond its epochs, 5 folds: (600-20-30)*0.9/5-5 = 94 s -> 9
    plan = plan_epochs(600, 20, 10, 5, 5, recipe_epochs=40)
    assert plan.epochs == 9
    assert 20 + 30 + 5 * (plan.epochs * 10 + 5) / 0.9 <= 600
    assert plan_epochs(600, 20, 10, 5, 5, recipe_epochs=4).epochs == 4  # the recipe's epochs are the most
    with pytest.raises(ConfigError, match=r"--time-limit 1:00 is too short: here one epoch of a fold takes about "
                                          r"0:10 and 5 fold\(s\) must each train at least one"):
        plan_epochs(60, 20, 10, 5, 5, recipe_epochs=40)


def test_a_time_limit_trains_every_fold_with_a_completed_schedule(data_copy, tmp_path):
    """The run records the epochs it chose; every fold trained exactly those, and each cosine ended at zero."""
    runs = tmp_path / "runs"
    cv = train(tiny_config(data_copy, runs, run_name="budget", epochs=500, time_limit=40.0))
    config = json.loads((runs / "budget" / "config.json").read_text())
    chosen = config["recipe"]["epochs"]
    assert config["time_limit"]["epochs"] == chosen and config["time_limit"]["recipe_epochs"] == 500
    assert 1 <= chosen < 500 and config["time_limit"]["seconds"] == 40.0
    assert config["recipe"]["warmup_epochs"] == pytest.approx(chosen / 500)  # the warm-up shrank with the epochs
    metrics = pd.read_csv(runs / "budget" / "metrics.csv")
    assert metrics.groupby("fold").epoch.max().tolist() == [chosen - 1] * 3  # every fold, every chosen epoch
    last = metrics.sort_values("epoch").groupby("fold").tail(1)
    assert (last.lr < 1e-3 * 1e-6).all()  # each fold's schedule completed: the cosine ended at zero
    assert cv["overall"]["n"] == 600
    # the same command resumes it: the epochs and warm-up the budget cut are not a recipe change
    train(tiny_config(data_copy, runs, run_name="budget", epochs=500, time_limit=40.0), resume=True)


def test_a_budget_too_small_for_one_epoch_is_one_line_and_leaves_no_run(data_copy, tmp_path):
    r = invoke("train", *TINY, "--epochs", "5", "--time-limit", "1s", "--no-progress", "--data-dir", data_copy,
               "--runs-dir", tmp_path / "runs", "--run-name", "short")
    assert r.exit_code == 1 and "--time-limit 0:01 is too short" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "short").exists()


# ---- weights files, and no network ----------------------------------------------------------------------------
def test_weights_in_each_format_load_the_same_tensors(tmp_path):
    torch.manual_seed(1)
    source = build_model("resnet18", 64)
    state = source.state_dict()
    files = {"plain.pth": state, "pytorch_model.bin": state, "checkpoint.pt": {"model": state, "epoch": 3},
             "timm_train.pth.tar": {"state_dict": state, "arch": "resnet18", "epoch": 9},
             "lightning.ckpt": {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 2},
             "compiled_ddp.pt": {f"_orig_mod.module.{k}": v for k, v in state.items()}}
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    for name in [*files, "model.safetensors"]:
        fresh = build_model("resnet18", 64)
        load_weights(fresh, tmp_path / name)
        for key, value in fresh.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


def test_a_file_without_weights_is_one_line(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "notes.pt")
    with pytest.raises(ConfigError, match="holds no state dict"):
        load_weights(build_model("lenet", 32), tmp_path / "notes.pt")


def test_pretrained_without_a_network_is_one_line_before_any_work(data_copy, tmp_path, monkeypatch):
    """Before, --recipe finetune offline built the image cache and made the run folder, then failed."""
    import huggingface_hub.constants

    monkeypatch.setattr("pipeline.models.hub_reachable", lambda host="", timeout=0: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty hub cache
    caches = sorted((data_copy / "cache").glob("*")) if (data_copy / "cache").exists() else []
    r = invoke("train", "--recipe", "finetune", "--folds", "0", "--no-progress", "--data-dir", data_copy,
               "--runs-dir", tmp_path / "runs", "--run-name", "offline")
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert "--pretrained cannot load the ImageNet weights of tf_efficientnet_lite0: cannot reach" in r.output
    assert "--weights FILE" in r.output
    assert not (tmp_path / "runs" / "offline").exists()  # nothing was done: no run folder, no 184 px cache
    assert (sorted((data_copy / "cache").glob("*")) if (data_copy / "cache").exists() else []) == caches


# ---- the CLI says what it is -------------------------------------------------------------------------------
def test_version_and_a_recipe_printed_whole():
    from pipeline import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.output.startswith(f"pipeline {__version__} (torch ")
    r = invoke("recipes", "finetune")
    assert r.exit_code == 0 and 'arch = "tf_efficientnet_lite0"' in r.output and "layer_decay = 0.7" in r.output
    assert invoke("recipes", "finetun").exit_code == 1


def test_help_has_no_placeholders_and_one_default_style():
    text = invoke("train", "--help").output + invoke("validate", "--help").output
    assert "<bool>" not in text and "{submission}" not in text and "SUBMISSION" in text
    assert "(default:" not in text and "].\n" not in text
    assert "The defaults shown are the built-in recipe's (lenet)" in " ".join(text.split())
