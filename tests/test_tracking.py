"""Live tracking: TensorBoard event files and an MLflow file store, read back with their own readers (issue 12)."""

import importlib.util
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report import build_report
from pipeline.train.session import train
from tests.conftest import tiny_config


def test_tensorboard_events_match_metrics_csv(data_copy, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = tmp_path / "runs"
    train(tiny_config(data_copy, runs, run_name="tb", epochs=3, folds=[0, 1], tracker="tensorboard", ema=True))
    metrics = pd.read_csv(runs / "tb" / "metrics.csv")
    for fold in (0, 1):
        events = EventAccumulator(str(runs / "tb" / "tensorboard" / f"fold{fold}"), size_guidance={"images": 0})
        events.Reload()
        mine = metrics[metrics.fold == fold].set_index("epoch")
        for key in ("train_loss", "val_loss", "val_acc", "val_logloss", "lr", "images_per_s", "ema_val_loss"):
            scalars = events.Scalars(key)
            assert [s.step for s in scalars] == list(mine.index)
            assert [s.value for s in scalars] == pytest.approx(mine[key].tolist(), rel=1e-6)
        wrong = [t for t in events.Tags()["images"] if t.startswith("wrong/")]
        assert 0 < len(wrong) <= 8 and all("P(dog)" in t for t in wrong)  # misclassified photos, named
    cv = json.loads((runs / "tb" / "cv.json").read_text())
    hparams = EventAccumulator(str(runs / "tb" / "tensorboard" / "hparams"))
    hparams.Reload()
    assert hparams.Scalars("cv/accuracy")[0].value == pytest.approx(cv["overall"]["accuracy"])


def test_mlflow_file_store_holds_the_recipe_metrics_and_report(data_copy, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # the user's choice is honoured
    runs = tmp_path / "runs"
    cv = train(tiny_config(data_copy, runs, run_name="ml", epochs=2, tracker="mlflow", report=True),
               report=build_report)
    config = json.loads((runs / "ml" / "config.json").read_text())
    client = MlflowClient(tracking_uri=store)
    logged = client.get_run(config["tracking"]["mlflow_run_id"])
    assert logged.info.run_name == "ml" and logged.info.status == "FINISHED"
    assert logged.data.params["arch"] == "lenet" and logged.data.params["img_size"] == "32"
    assert set(logged.data.params) == set(config["recipe"])
    assert logged.data.metrics["cv/accuracy"] == pytest.approx(cv["overall"]["accuracy"])
    assert logged.data.metrics["cv/fold2_log_loss"] == pytest.approx(cv["folds"]["2"]["log_loss"])
    history = client.get_metric_history(logged.info.run_id, "fold1/val_loss")
    metrics = pd.read_csv(runs / "ml" / "metrics.csv")
    mine = metrics[metrics.fold == 1]
    assert [h.step for h in history] == mine.epoch.tolist()
    assert [h.value for h in history] == pytest.approx(mine.val_loss.tolist())
    assert [a.path for a in client.list_artifacts(logged.info.run_id)] == ["report.html"]


def test_mlflow_beside_runs_by_default(data_copy, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(tiny_config(data_copy, tmp_path / "runs", run_name="ml", epochs=1, folds=[0], tracker="mlflow"))
    assert (tmp_path / "mlruns").is_dir() and not (tmp_path / "runs" / "mlruns").exists()


def test_a_missing_tracker_package_is_one_line(data_copy, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    r = CliRunner().invoke(app, ["train", "--tracker", "mlflow", "--data-dir", str(data_copy), "--runs-dir",
                                 str(tmp_path / "runs"), "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "--tracker mlflow needs the mlflow package" in r.output and 'pip install -e ".[mlflow]"' in r.output
    assert not (tmp_path / "runs").exists()
