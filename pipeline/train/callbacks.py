"""The callbacks every fold uses: early stopping, the metrics log, checkpoints (and the random states a
resume needs), frozen BatchNorm and the EMA of the weights. What a run shows is :mod:`pipeline.train.display`."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from pipeline.fileio import atomic_path
from pipeline.train.engine import Callback, FitState
from pipeline.train.runtime import Runtime

_logger = logging.getLogger(__name__)


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a better validation loss (0: never). The loop counts them:
    an epoch is better when its validation loss drops by more than MIN_DELTA."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_fit_start(self, state: FitState) -> None:  # a resumed fold may have stopped already
        state.stop = self.patience > 0 and state.bad_epochs >= self.patience

    on_epoch_end = on_fit_start


class MetricsLog(Callback):
    """Appends the epoch's row to the run's metrics.csv (main process only)."""

    def __init__(self, run):
        self.run = run

    def on_epoch_end(self, state: FitState) -> None:
        if state.runtime.is_main:
            self.run.append_metrics(state.row)


class Checkpointer(Callback):
    """best.pt when the epoch improved, last.pt (everything a resume needs) every epoch; restores
    last.pt at fit start. Only the main process writes; every process reads.

    Args:
        run: the RunDir.
        extra: objects with ``state_dict``/``load_state_dict`` saved beside the model (e.g. EMA).
        meta: saved in both checkpoints (the recipe).
    """

    def __init__(self, run, fold: int, meta: dict, extra: dict | None = None):
        self.run, self.fold, self.meta, self.extra = run, fold, meta, extra or {}

    def on_fit_start(self, state: FitState) -> None:
        path = self.run.last(self.fold)
        if not path.exists():
            return
        saved = torch.load(path, map_location="cpu", weights_only=False)
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        state.amp.load_scaler(saved["scaler"])
        for name, obj in self.extra.items():
            obj.load_state_dict(saved["extra"][name])
        _set_rng_state(saved["rng"], state.runtime)
        state.start_epoch = saved["epoch"] + 1
        state.best_loss, state.bad_epochs = saved["best_loss"], saved["bad_epochs"]
        _logger.info("fold %d: resuming after epoch %d", self.fold, saved["epoch"])

    def on_epoch_end(self, state: FitState) -> None:
        rng = _rng_states(state.runtime)  # a collective: every process calls it
        if not state.runtime.is_main:
            return
        if state.improved:
            with atomic_path(self.run.best(self.fold)) as tmp:
                torch.save({"model": state.candidate.state_dict(), "epoch": state.epoch, "metrics": state.row,
                            "weights": "model" if state.candidate is state.model else "ema", **self.meta}, tmp)
        with atomic_path(self.run.last(self.fold)) as tmp:
            torch.save({"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                        "scheduler": state.scheduler.state_dict(), "scaler": state.amp.scaler.state_dict(),
                        "extra": {name: obj.state_dict() for name, obj in self.extra.items()},
                        "epoch": state.epoch, "best_loss": state.best_loss, "bad_epochs": state.bad_epochs,
                        "rng": rng, **self.meta}, tmp)


def _rng_states(runtime: Runtime) -> list[dict]:
    """Every process's random state (dropout draws from it), in rank order."""
    own = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if runtime.device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(runtime.device)
    if not runtime.distributed:
        return [own]
    states = [None] * runtime.world
    torch.distributed.all_gather_object(states, own)
    return states


def _set_rng_state(states: list[dict], runtime: Runtime) -> None:
    """This process's saved random state (a resume with more processes than before: the first's)."""
    own = states[runtime.rank] if runtime.rank < len(states) else states[0]
    torch.set_rng_state(own["torch"])
    np.random.set_state(own["numpy"])
    if "cuda" in own and runtime.device.type == "cuda":
        torch.cuda.set_rng_state(own["cuda"], runtime.device)


class FreezeBatchNorm(Callback):
    """BatchNorm layers keep their statistics (eval mode) while the rest trains: fine-tuning on small
    batches, whose statistics are noisy estimates of the pretrained ones."""

    def on_epoch_start(self, state: FitState) -> None:
        for m in state.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


class Ema(Callback):
    """An exponential moving average of the weights (timm's ModelEmaV3, with its warm-up so that a few
    hundred steps suffice), validated every epoch; it becomes the epoch's candidate when its
    validation loss is lower than the model's.

    Args:
        model: the plain model.
        decay: the largest decay (reached after the warm-up).
        validate: ``validate(model) -> dict`` as given to :func:`fit`.
    """

    def __init__(self, model: nn.Module, decay: float, validate):
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, use_warmup=True)
        self.validate, self.steps = validate, 0

    def on_batch_end(self, state: FitState) -> None:
        self.steps += 1
        self.ema.update(state.model, step=self.steps)

    def on_validation_end(self, state: FitState) -> None:
        val = self.validate(self.ema.module)
        state.row |= {"ema_val_loss": val["val_loss"], "ema_val_acc": val["val_acc"]}
        if val["val_loss"] < state.val_loss:
            state.val_loss, state.candidate = val["val_loss"], self.ema.module

    def state_dict(self) -> dict:
        return {"module": self.ema.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, saved: dict) -> None:
        self.ema.module.load_state_dict(saved["module"])
        self.steps = saved["steps"]
