"""The callbacks every fold uses: early stopping, the metrics log, checkpoints (and the random states a
resume needs), frozen BatchNorm, the EMA of the weights and weight averaging along the epochs. What a run shows is
:mod:`pipeline.train.display`."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from pipeline.compute.placement import evaluation_copy
from pipeline.compute.runtime import Runtime
from pipeline.fileio import atomic_path
from pipeline.train.engine import MIN_DELTA, Callback, FitState

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
        _logger.info("fold %d: resuming after epoch %d", self.fold, saved["epoch"] + 1)

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

    def on_fit_end(self, state: FitState) -> None:
        """best.pt takes the averaged weights when they validated better than every epoch (see WeightAverage)."""
        if state.averaged is None or not state.runtime.is_main:
            return
        with atomic_path(self.run.best(self.fold)) as tmp:
            torch.save({"model": state.candidate.state_dict(), "epoch": max(state.averaged["epochs"]),
                        "metrics": {"val_loss": state.val_loss}, "weights": state.averaged["kind"],
                        "average": state.averaged, **self.meta}, tmp)


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

        self.ema = ModelEmaV3(evaluation_copy(model), decay=decay, use_warmup=True)
        self.validate, self.steps = validate, 0

    def on_batch_end(self, state: FitState) -> None:
        self.steps += 1
        self.ema.update(state.model, step=self.steps)

    def on_validation_end(self, state: FitState) -> None:
        val = self.validate(self.ema.module)
        state.row |= {"ema_val_loss": val["val_loss"], "ema_val_acc": val["val_acc"]} | \
            ({"ema_val_metric": val["val_metric"]} if "val_metric" in val else {})
        if state.select(val) < state.val_loss:  # the validation loss, or the competition's metric
            state.val_loss, state.candidate = state.select(val), self.ema.module

    def state_dict(self) -> dict:
        return {"module": self.ema.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, saved: dict) -> None:
        self.ema.module.load_state_dict(saved["module"])
        self.steps = saved["steps"]


class WeightAverage(Callback):
    """Weight averaging along the fold (the recipe's ``average``), offered as best.pt when it validates better.

    ``swa``: the uniform mean of the weights of the last ``n`` epochs (stochastic weight averaging, Izmailov et al.
    2018; BatchNorm statistics averaged with the weights rather than recomputed, as timm's EMA does). ``soup``: a
    greedy soup (Wortsman et al. 2022; AutoGluon's checkpoint ensembling): the ``n`` epochs with the lowest
    validation loss, starting from the best and adding the next while the mean validates better. At the end of the
    fold the average is validated once more; it replaces best.pt only when its validation loss beats the best
    epoch's (or the EMA's), so it can only help. The kept epochs' weights are saved in last.pt, so a resume
    averages the same epochs.

    Args:
        kind: ``swa`` or ``soup``.
        n: how many epochs' weights.
        validate: ``validate(model) -> dict`` as given to :func:`pipeline.train.engine.fit`.
    """

    def __init__(self, kind: str, n: int, validate):
        self.kind, self.n, self.validate = kind, n, validate
        self.kept: list[dict] = []  # {"epoch", "val_loss", "weights"} (weights on the CPU; val_loss: state.select's)
        self.select = None  # the validation loss, or the competition's metric as a figure to minimise

    def on_epoch_end(self, state: FitState) -> None:
        if self.kind == "swa" and state.epoch < state.epochs - self.n:
            return
        weights = {k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()}
        self.kept.append({"epoch": state.epoch, "val_loss": float(state.select(state.row)), "weights": weights})
        order = sorted(self.kept, key=lambda e: e["val_loss"]) if self.kind == "soup" else self.kept
        self.kept = sorted(order[:self.n] if self.kind == "soup" else order[-self.n:], key=lambda e: e["epoch"])

    def on_fit_end(self, state: FitState) -> None:
        if len(self.kept) < 2:
            return
        self.select = state.select
        model = evaluation_copy(state.model)
        if self.kind == "swa":
            members = self.kept
            loss = self._loss(model, members)
        else:
            ranked = sorted(self.kept, key=lambda e: e["val_loss"])
            members, loss = ranked[:1], ranked[0]["val_loss"]
            for entry in ranked[1:]:
                trial = self._loss(model, [*members, entry])
                if trial < loss:
                    members, loss = [*members, entry], trial
            if len(members) < 2:
                _logger.info("fold %d: no soup of the best epochs validates better than the best epoch alone",
                             state.fold)
                return
            model.load_state_dict(_mean([e["weights"] for e in members]))
        epochs = sorted(e["epoch"] for e in members)
        if loss < state.best_loss - MIN_DELTA:
            state.candidate, state.val_loss, state.best_loss = model, loss, loss
            state.averaged = {"kind": self.kind, "epochs": epochs, "val_loss": loss}
            _logger.info("fold %d: the %s of epochs %s validates better (%.4f): best.pt holds it", state.fold,
                         self.kind, ", ".join(str(e + 1) for e in epochs), loss)
        else:
            _logger.info("fold %d: the %s of epochs %s validates at %.4f, not better than the best epoch (%.4f); "
                         "best.pt keeps that epoch", state.fold, self.kind, ", ".join(str(e + 1) for e in epochs),
                         loss, state.best_loss)

    def _loss(self, model: nn.Module, members: list[dict]) -> float:
        model.load_state_dict(_mean([e["weights"] for e in members]))
        return float(self.select(self.validate(model)))

    def state_dict(self) -> dict:
        return {"kept": self.kept}

    def load_state_dict(self, saved: dict) -> None:
        self.kept = saved["kept"]


def _mean(states: list[dict]) -> dict:
    """The element-wise mean of state dicts (integer buffers, such as BatchNorm's batch count: the last one's)."""
    out = {}
    for key, last in states[-1].items():
        out[key] = torch.stack([s[key] for s in states]).mean(dim=0).to(last.dtype) \
            if last.is_floating_point() else last.clone()
    return out
