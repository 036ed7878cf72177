import json

import numpy as np
import pandas as pd
import pytest
import torch

import pipeline.train.session as session
from pipeline.errors import ConfigError, Interrupted
from pipeline.rundir import METRIC_COLUMNS, RunDir
from pipeline.train.engine import MIN_DELTA
from pipeline.train.session import train
from tests.conftest import tiny_config

TIMING = ["images_per_s", "seconds"]


def test_run_folder_is_complete_and_consistent(tiny_run, sample_data):
    folds = pd.read_csv(sample_data / "folds.csv")
    for k in range(3):
        best = torch.load(tiny_run / f"fold{k}" / "best.pt", weights_only=False)
        assert {"model", "epoch", "metrics", "recipe"} <= set(best)
        assert (tiny_run / f"fold{k}" / "last.pt").exists()
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert sorted(zip(metrics.fold, metrics.epoch, strict=True)) == [(k, e) for k in range(3) for e in range(2)]
    assert (metrics.images_per_s > 0).all()
    oof = RunDir(tiny_run).read_oof()  # its path: where each photo is (oof.csv keys it in the data folder)
    assert sorted(oof.path) == sorted(folds.path)  # every training image exactly once
    assert oof.set_index("path").fold.equals(folds.set_index("path").fold.loc[oof.path])
    assert oof.prob_dog.between(0, 1).all()
    cv = json.loads((tiny_run / "cv.json").read_text())
    assert cv["overall"]["accuracy"] == pytest.approx(((oof.prob_dog >= 0.5) == oof.label).mean())
    for k in range(3):
        part = oof[oof.fold == k]
        assert cv["folds"][str(k)]["accuracy"] == pytest.approx(((part.prob_dog >= 0.5) == part.label).mean())
        assert cv["folds"][str(k)]["n"] == len(part)
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["recipe"]["seed"] == 0 and config["environment"]["torch"] == torch.__version__


def _metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=TIMING)


def test_same_seed_same_metrics_with_and_without_cache(data_copy, tmp_path):
    runs = tmp_path / "runs"
    train(tiny_config(data_copy, runs, run_name="a", folds=[0]))
    train(tiny_config(data_copy, runs, run_name="b", folds=[0], workers=1))  # a loader process
    train(tiny_config(data_copy, runs, run_name="c", folds=[0], cache=False))
    pd.testing.assert_frame_equal(_metrics(runs / "a"), _metrics(runs / "b"))
    pd.testing.assert_frame_equal(_metrics(runs / "a"), _metrics(runs / "c"))
    train(tiny_config(data_copy, runs, run_name="d", folds=[0], seed=1))
    assert not _metrics(runs / "a").equals(_metrics(runs / "d"))


def test_resume_after_a_finished_fold_and_mid_fold(data_copy, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    train(tiny_config(data_copy, runs, run_name="straight", epochs=3))

    real_append = RunDir.append_metrics

    def interrupt_fold1_epoch1(run_dir, row):
        if row["fold"] == 1 and row["epoch"] == 1:
            raise KeyboardInterrupt
        real_append(run_dir, row)

    monkeypatch.setattr(RunDir, "append_metrics", interrupt_fold1_epoch1)
    with pytest.raises(Interrupted, match="--resume"):
        train(tiny_config(data_copy, runs, run_name="cut", epochs=3))
    assert not (runs / "cut" / "oof.csv").exists()
    fold0_mtime = (runs / "cut" / "fold0" / "best.pt").stat().st_mtime_ns
    monkeypatch.setattr(RunDir, "append_metrics", real_append)

    trained = []
    real_fold = session.train_fold
    monkeypatch.setattr(session, "train_fold", lambda cfg, k, *a: trained.append(k) or real_fold(cfg, k, *a))
    train(tiny_config(data_copy, runs, run_name="cut", epochs=3), resume=True)  # the same recipe (issue 9)
    assert trained == [1, 2]  # fold 0 was not retrained
    assert (runs / "cut" / "fold0" / "best.pt").stat().st_mtime_ns == fold0_mtime
    # the resumed run continued fold 1 from its epoch 0 and reproduces the uninterrupted run exactly
    pd.testing.assert_frame_equal(_metrics(runs / "cut").sort_values(["fold", "epoch"]).reset_index(drop=True),
                                  _metrics(runs / "straight"))
    a, b = pd.read_csv(runs / "cut" / "oof.csv"), pd.read_csv(runs / "straight" / "oof.csv")
    np.testing.assert_allclose(a.sort_values("path").prob_dog, b.sort_values("path").prob_dog, rtol=1e-5)


def test_existing_run_needs_resume_and_folds_must_exist(tiny_run, sample_data):
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config(sample_data, tiny_run.parent, run_name="tiny"))
    with pytest.raises(ConfigError, match="out of range"):
        train(tiny_config(sample_data, tiny_run.parent, run_name="bad-folds", folds=[7]))


def test_early_stopping_ends_a_fold(data_copy, tmp_path):
    runs = tmp_path / "runs"
    train(tiny_config(data_copy, runs, run_name="es", folds=[0], epochs=30, patience=1, lr=0.05))
    metrics = pd.read_csv(runs / "es" / "metrics.csv")
    assert len(metrics) < 30
    best_loss, best_epoch = float("inf"), -1
    for epoch, loss in enumerate(metrics.val_loss):
        if loss < best_loss - MIN_DELTA:
            best_loss, best_epoch = loss, epoch
    assert len(metrics) - 1 - best_epoch == 1  # stopped one epoch after the last improvement
    best = torch.load(runs / "es" / "fold0" / "best.pt", weights_only=False)
    assert best["epoch"] == best_epoch


@pytest.mark.slow
def test_compiled_training_saves_checkpoints_a_plain_model_loads(data_copy, tmp_path):
    """--compile: torch.compile'd steps; the checkpoints hold the plain module's weights."""
    from pipeline.predict.inference import predict_run

    runs = tmp_path / "runs"
    cv = train(tiny_config(data_copy, runs, run_name="compiled", folds=[0], compile=True))
    plain = train(tiny_config(data_copy, runs, run_name="plain", folds=[0]))
    assert cv["overall"]["accuracy"] == pytest.approx(plain["overall"]["accuracy"], abs=0.05)
    best = torch.load(runs / "compiled" / "fold0" / "best.pt", weights_only=False)
    assert not any(k.startswith("_orig_mod.") for k in best["model"])
    probs = predict_run(runs / "compiled", data_copy / "test.csv", tta="none")
    assert probs.prob_dog.between(0, 1).all()
