"""Live tracking with the tools people already use: TensorBoard event files and MLflow's local store.

Both plug into the training engine as a callback (per-epoch figures), and get two calls from the
run: ``fold_done`` (a handful of misclassified validation photos) and ``run_done`` (the resolved
recipe as hyper-parameters with the CV score, the report as an artifact).

- TensorBoard: ``runs/<run>/tensorboard/fold<k>/`` holds each fold's events, written by the one
  process that trains that fold (under DDP, the main process), and ``tensorboard/hparams`` the
  run's recipe with its CV figures. ``tensorboard --logdir runs`` shows every run.
- MLflow: one MLflow run per pipeline run in ``mlruns/`` beside ``runs/`` (file store, no server;
  MLflow 3.7+ wants ``MLFLOW_ALLOW_FILE_STORE=true`` for it, which the tracker sets), or wherever
  ``MLFLOW_TRACKING_URI`` points (a ``sqlite:///`` database or a server); params = the recipe, metrics per fold and
  epoch
  (``fold0/val_loss`` at step = epoch), cv.json's figures, the report as an artifact. Only the
  main process logs; folds another process trained are logged from metrics.csv when the run ends.

``--tracker auto`` (the default) is TensorBoard when the package is installed, else nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from pipeline.choices import TRACKERS
from pipeline.competitions.spec import run_competition
from pipeline.data.images import thumbnail
from pipeline.errors import ConfigError
from pipeline.metrics import most_confident_wrong
from pipeline.train.engine import Callback, FitState

_logger = logging.getLogger(__name__)
SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_logloss", "val_metric", "lr", "images_per_s",
           "ema_val_loss", "ema_val_acc", "ema_val_metric")
# cv.json's figures (f1_macro: K classes only), and the competition's own metric (cv.json's "metric") first
METRICS = ("accuracy", "log_loss", "roc_auc", "f1_macro")


def cv_metrics(cv: dict) -> tuple[str, ...]:
    """The figures of cv.json a tracker logs: the competition's metric first, then the usual ones."""
    return tuple(dict.fromkeys((cv.get("metric", "accuracy"), *METRICS)))
EXTRA = {"tensorboard": 'pip install -e ".[tensorboard]" (or pip install tensorboard)',
         "mlflow": 'pip install -e ".[mlflow]" (or pip install mlflow)'}


def resolve_tracker(name: str) -> str:
    """The tracker ``name`` stands for; a ConfigError when its package is missing."""
    if name not in TRACKERS:
        raise ConfigError(f"--tracker must be one of {', '.join(TRACKERS)}, got {name!r}.")
    if name == "auto":
        return "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    package = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"--tracker {name} needs the {package} package, which is not installed: {EXTRA[name]}.")
    return name


class Tracker(Callback):
    """Nothing tracked (``--tracker none``); the base of the real ones."""

    def fold_done(self, fold: int, oof: pd.DataFrame) -> None: ...

    def run_done(self, cv: dict, report: Path | None) -> None: ...

    def close(self) -> None: ...


def make_tracker(name: str, run, recipe, *, main: bool) -> Tracker:
    """The tracker of a run for this process (``main``: the process that writes run files)."""
    name = resolve_tracker(name)
    if name == "tensorboard":
        return TensorBoardTracker(run, recipe, main=main)
    if name == "mlflow" and main:
        return MlflowTracker(run, recipe)
    return Tracker()


class TensorBoardTracker(Tracker):
    """Event files per fold under ``runs/<run>/tensorboard/``."""

    def __init__(self, run, recipe, *, main: bool):
        self.run, self.recipe, self.main = run, recipe, main
        self.comp = run_competition(run.config())
        self.writers = {}

    def _writer(self, fold: int):
        from torch.utils.tensorboard import SummaryWriter

        if fold not in self.writers:
            self.writers[fold] = SummaryWriter(log_dir=str(self.run.tensorboard_dir / f"fold{fold}"))
        return self.writers[fold]

    def on_epoch_end(self, state: FitState) -> None:
        if not state.runtime.is_main:  # DDP: every process trains this fold; one writes
            return
        writer = self._writer(state.fold)
        for key in SCALARS:
            if key in state.row:
                writer.add_scalar(key, state.row[key], state.epoch)
        writer.flush()

    def fold_done(self, fold: int, oof: pd.DataFrame) -> None:
        if not self.comp.kind.class_indices or self.comp.target.kind == "ordinal":
            return  # the wrong photos of one label; other targets: their report page
        writer = self._writer(fold)
        classes = self.comp.classes
        for _, row in most_confident_wrong(oof, 8, self.comp.prob_columns()).iterrows():
            img = thumbnail(row.path, 128)
            if img is not None:
                said = f"P({self.comp.positive}) {row[self.comp.prob_columns()[0]]:.2f}" if self.comp.binary \
                    else f"called {classes[int(row.predicted)]} at {row.confidence:.2f}"
                writer.add_image(f"wrong/{Path(row.path).name} (a {classes[int(row.label)]}, {said})", np.asarray(img),
                                 dataformats="HWC")
        writer.flush()

    def run_done(self, cv: dict, report: Path | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if not self.main:
            return
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in self.recipe.to_dict().items()}
        overall = cv["overall"]
        with SummaryWriter(log_dir=str(self.run.tensorboard_dir)) as writer:
            writer.add_hparams(hparams, {f"cv/{k}": overall[k] for k in cv_metrics(cv)
                                         if overall.get(k) is not None}, run_name="hparams")

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def check_tracker(name: str, runs_dir: str | Path) -> str:
    """The tracker ``name`` stands for, once its store answers (MLflow: within seconds); ConfigError otherwise.

    Called before the run folder exists, so a bad ``MLFLOW_TRACKING_URI`` (an unknown scheme, a server that is
    not there) is one line instead of MLflow's traceback, or four minutes of retries and then a traceback.
    """
    name = resolve_tracker(name)
    if name == "mlflow":
        check_mlflow_store(mlflow_uri(Path(runs_dir)))
    return name


def check_mlflow_store(uri: str, timeout: float = 5.0) -> None:
    """ConfigError unless MLflow can read experiments from ``uri`` within about ``timeout`` seconds."""
    from mlflow.tracking import MlflowClient

    from pipeline.models import hub_reachable

    where = "MLFLOW_TRACKING_URI=" + uri if os.environ.get("MLFLOW_TRACKING_URI") else f"the MLflow store {uri}"
    advice = ("set MLFLOW_TRACKING_URI to a running server (http://HOST:PORT), a sqlite:/// database or a folder, "
              "unset it to log into mlruns/ beside runs/, or pass --tracker tensorboard or none")
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not hub_reachable(parts.hostname or "", timeout, port=port):
            raise ConfigError(f"Nothing answers at {parts.hostname}:{port} ({where}) within {timeout:.0f} s: {advice}.")
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout)))
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds for a store it cannot use
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        why = f"it knows no store of the scheme '{parts.scheme}://'" if "unsupported URI" in why else why[:200]
        raise ConfigError(f"MLflow cannot use {where} ({why}): {advice}.") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def mlflow_uri(runs_dir: Path) -> str:
    """Where MLflow logs: ``MLFLOW_TRACKING_URI`` when the user set it, else ``mlruns/`` beside ``runs/``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path(runs_dir).resolve().parent / "mlruns").as_uri()


class MlflowTracker(Tracker):
    """One MLflow run per pipeline run (reopened on --resume), logged by the main process."""

    EXPERIMENT = "catdog-pipeline"

    def __init__(self, run, recipe):
        from mlflow.tracking import MlflowClient

        self.run, self.recipe = run, recipe
        uri = mlflow_uri(run.path.parent)
        if uri.startswith("file:"):
            # MLflow 3.7+ keeps its file store in maintenance mode and refuses it unless asked; the
            # issue's "no server, no database" store is this one, so this process asks for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.EXPERIMENT)
        config = run.config()
        self.run_id = config.get("tracking", {}).get("mlflow_run_id")
        if self.run_id is None:
            self.run_id = self.client.create_run(experiment_id, run_name=run.name).info.run_id
            for key, value in recipe.to_dict().items():
                self.client.log_param(self.run_id, key, "" if value is None else value)
            self.client.set_tag(self.run_id, "competition", run_competition(config).name)
            run.write_config(run.config() | {"tracking": {"mlflow_run_id": self.run_id,
                                                          "mlflow_uri": self.client.tracking_uri}})
        self.logged: set[tuple[int, int]] = set()

    def _log_row(self, row: dict) -> None:
        fold, epoch = int(row["fold"]), int(row["epoch"])
        for key in SCALARS:
            value = row.get(key)
            if value is not None and np.isfinite(value):
                self.client.log_metric(self.run_id, f"fold{fold}/{key}", float(value), step=epoch)
        self.logged.add((fold, epoch))

    def on_epoch_end(self, state: FitState) -> None:
        self._log_row(state.row)

    def run_done(self, cv: dict, report: Path | None) -> None:
        metrics = self.run.read_metrics()  # folds other processes trained, or epochs before a resume
        for row in metrics.to_dict("records"):
            if (int(row["fold"]), int(row["epoch"])) not in self.logged:
                self._log_row(row)
        for fold, scores in cv["folds"].items():
            for key in cv_metrics(cv):
                if scores.get(key) is not None:
                    self.client.log_metric(self.run_id, f"cv/fold{fold}_{key}", scores[key])
        for key in cv_metrics(cv):
            if cv["overall"].get(key) is not None:
                self.client.log_metric(self.run_id, f"cv/{key}", cv["overall"][key])
        if report is not None and report.exists():
            self.client.log_artifact(self.run_id, str(report))
        self.client.set_terminated(self.run_id)
