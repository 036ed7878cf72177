"""Nothing silently wrong after an interruption: resume keeps the run's folds and recipe, predict
refuses half-finished runs, unreadable test photos keep their ids, lost checkpoints (issue 9, cases 3-6)."""

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

import pipeline.train.session as session
from pipeline.data.folds import write_folds
from pipeline.errors import ConfigError, Interrupted
from pipeline.predict.inference import NEUTRAL, predict_run
from pipeline.predict.predict import predict
from pipeline.rundir import RunDir, find_run
from pipeline.train.session import train
from tests.conftest import tiny_config


def _interrupt_after(monkeypatch, fold: int):
    """Make training stop with Ctrl-C as fold ``fold`` starts (earlier folds finish)."""
    real = session.train_fold

    def fold_then_stop(run_dir, k, *a):
        if k == fold:
            raise KeyboardInterrupt
        return real(run_dir, k, *a)

    monkeypatch.setattr(session, "train_fold", fold_then_stop)
    return real


def test_resume_after_a_resplit_keeps_the_runs_own_folds(data_copy, tmp_path, monkeypatch, caplog):
    """Before, --resume rewrote the run's folds.csv from data/folds.csv: oof.csv held images twice."""
    runs = tmp_path / "runs"
    real = _interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        train(tiny_config(data_copy, runs, run_name="r", epochs=1))
    monkeypatch.setattr(session, "train_fold", real)
    own = pd.read_csv(runs / "r" / "folds.csv")
    write_folds(data_copy, n_folds=3, seed=7)  # the user re-splits in between
    assert not pd.read_csv(data_copy / "folds.csv")[["path", "fold"]].equals(own[["path", "fold"]])

    with caplog.at_level(logging.WARNING):
        cv = train(tiny_config(data_copy, runs, run_name="r", epochs=1), resume=True)
    assert "has changed since run r started" in caplog.text
    pd.testing.assert_frame_equal(pd.read_csv(runs / "r" / "folds.csv"), own)
    oof = pd.read_csv(runs / "r" / "oof.csv")
    assert len(oof) == 600 and oof.path.is_unique  # every image exactly once
    assert oof.set_index("path").fold.equals(own.set_index("path").fold.loc[oof.path])
    assert cv["overall"]["n"] == 600


def test_resume_refuses_changed_recipe_and_records_changed_settings(tiny_run, sample_data, tmp_path):
    """Before, --resume --epochs 50 --arch resnet34 exited 0 having ignored both."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    with pytest.raises(ConfigError) as err:
        train(tiny_config(sample_data, runs, run_name="tiny", epochs=50, arch="resnet34"), resume=True)
    assert "epochs 2 -> 50" in str(err.value) and "arch 'lenet' -> 'resnet34'" in str(err.value)
    before = json.loads((runs / "tiny" / "config.json").read_text())
    assert before["recipe"]["epochs"] == 2  # nothing was changed by the refusal

    train(tiny_config(sample_data, runs, run_name="tiny", workers=1), resume=True)  # a setting may change
    config = json.loads((runs / "tiny" / "config.json").read_text())
    assert config["settings"]["workers"] == 1 and config["recipe"] == before["recipe"]
    assert config["resumes"][-1]["changed"] == {"workers": 1}


def test_predict_picks_the_newest_finished_run_and_refuses_a_partial_one(tiny_run, data_copy, tmp_path,
                                                                        monkeypatch, caplog):
    """Before, predict with no --run took the newest run even with one fold of three finished."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    real = _interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        train(tiny_config(data_copy, runs, run_name="half"))
    monkeypatch.setattr(session, "train_fold", real)
    half = RunDir(runs / "half")
    assert half.finished_folds() == [0] and half.missing_folds() == [1, 2]

    assert find_run(runs).name == "tiny"  # the newest finished run, not "half"
    out = predict(runs=[], test_csv=data_copy / "test.csv", runs_dir=runs, submissions_dir=tmp_path / "subs")
    assert out["path"].name.startswith("tiny-")
    with pytest.raises(ConfigError, match=r"not finished folds 1, 2 .*--partial"):
        predict(runs=[half.path], test_csv=data_copy / "test.csv", runs_dir=runs, submissions_dir=tmp_path / "subs")
    with caplog.at_level(logging.WARNING):
        probs = predict_run(half.path, data_copy / "test.csv", tta="none", partial=True)
    assert "folds 1, 2 are not finished" in caplog.text
    assert [c for c in probs.columns if c.startswith("fold")] == ["fold0"]
    shutil.rmtree(runs / "tiny")
    with pytest.raises(ConfigError, match="No run in .* has finished every fold"):
        find_run(runs)


def test_an_unreadable_test_photo_gets_a_neutral_prediction(tiny_run, data_copy, tmp_path, caplog):
    """Before, the catalogue dropped it and the submission missed its id."""
    test = pd.read_csv(data_copy / "test.csv")
    test["readable"] = True
    test.loc[test.id == 7, "readable"] = False  # as the catalogue marks a truncated photo
    test.to_csv(data_copy / "test.csv", index=False)
    run_dir = shutil.copytree(tiny_run, tmp_path / "tiny")
    with caplog.at_level(logging.WARNING):
        probs = predict_run(run_dir, data_copy / "test.csv", tta="none")
    assert "ids 7" in caplog.text
    assert len(probs) == 100 and probs.id.tolist() == test.id.tolist()
    assert probs.set_index("id").prob_dog[7] == NEUTRAL
    assert probs[probs.id != 7].prob_dog.std() > 0


def test_predict_after_the_checkpoints_were_deleted(tiny_run, data_copy, tmp_path, caplog):
    """Before, FileNotFoundError, even with the test predictions saved in the run."""
    run_dir = shutil.copytree(tiny_run, tmp_path / "tiny")
    first = predict_run(run_dir, data_copy / "test.csv", tta="none")
    for ckpt in run_dir.glob("fold*/*.pt"):
        ckpt.unlink()
    with caplog.at_level(logging.WARNING):
        again = predict_run(run_dir, data_copy / "test.csv", tta="none")
    assert "checkpoints are gone" in caplog.text
    np.testing.assert_allclose(again.prob_dog, first.prob_dog)
    with pytest.raises(ConfigError, match="has lost its checkpoints .* no saved test predictions .* --tta hflip"):
        predict_run(run_dir, data_copy / "test.csv", tta="hflip")
