"""The training engine: one epoch of training, one evaluation, and the loop that calls callbacks.

``train_one_epoch`` and ``evaluate`` are apart (as in torchvision's references); ``fit`` runs the
epochs and hands a :class:`FitState` to each :class:`Callback` at fit start, epoch start, batch end,
epoch end and fit end. Checkpointing, early stopping, the metrics row and the progress bar are
callbacks (fastai's and Lightning's idea, kept to a few dozen lines); so are later additions.

Nothing here reads a GPU value per step: the loss sum and the correct count stay on the device and
are read once per epoch (the progress callback reads them every few batches).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pipeline.compute.evaluation import _BINARY, Amp
from pipeline.compute.runtime import Runtime
from pipeline.errors import PipelineError
from pipeline.targets.task import Task

_logger = logging.getLogger(__name__)

MIN_DELTA = 1e-4  # a validation loss must drop by more than this to count as better


@dataclass
class FitState:
    """What the loop knows, handed to every callback."""

    fold: int
    epochs: int
    model: nn.Module  # the plain module: its state_dict is what checkpoints hold
    net: nn.Module  # what the forward pass goes through (the model, or its DDP/compiled wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp: Amp
    runtime: Runtime
    task: Task = field(default_factory=Task)
    epoch: int = 0  # the epoch being trained (from 0)
    start_epoch: int = 0
    batch: int = 0  # batches done in this epoch
    batches: int = 0  # batches per epoch
    seen: int = 0  # images seen in this epoch by this process
    loss_sum: torch.Tensor | None = None  # this epoch's summed loss (on the device)
    correct: torch.Tensor | None = None  # this epoch's correct count (on the device)
    epoch_start: float = 0.0
    row: dict = field(default_factory=dict)  # the epoch's metrics row, built at epoch end
    val_loss: float = math.inf  # the epoch's validation loss that counts (a callback may offer a better model)
    candidate: nn.Module | None = None  # the weights this epoch offers as the best: the model, or e.g. its EMA
    improved: bool = False
    best_loss: float = math.inf
    bad_epochs: int = 0
    stop: bool = False
    averaged: dict | None = None  # set at fit end when averaged weights validate better (state.candidate holds them)
    # the figure to minimise that epochs are compared on, from validate's dict (pipeline.metrics.selection): the
    # validation loss, or the competition's metric; val_loss and best_loss above hold it
    select: Any = field(default=lambda val: val["val_loss"])


class Callback:
    """Hooks the loop calls; each gets the :class:`FitState`.

    ``on_validation_end`` runs once the epoch's row holds the validation figures and before the loop
    decides whether the epoch improved: a callback may lower ``state.val_loss`` and offer other
    weights as ``state.candidate`` (the EMA does).
    """

    def on_fit_start(self, state: FitState) -> None: ...

    def on_epoch_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_validation_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


def _call(callbacks: list[Callback], hook: str, state: FitState) -> None:
    for cb in callbacks:
        getattr(cb, hook)(state)


def train_step(net: nn.Module, x: torch.Tensor, target: torch.Tensor, optimizer, scheduler, amp: Amp,
               task: Task | None = None):
    """One optimizer step on a batch; returns the loss and the logits (still on the device, no sync).

    Args:
        net: the model (or its DDP/compiled wrapper), in train mode.
        x: the normalised batch.
        target: two classes: P(positive) per image (0/1 labels, or soft targets); K classes: class indices, or
            (n, K) soft targets.
        task: the loss (default: two classes, one logit).
    """
    optimizer.zero_grad(set_to_none=True)
    logits = amp.logits(net, x)
    loss = (task or _BINARY).loss(logits, target)
    amp.scaler.scale(loss).backward()
    amp.scaler.step(optimizer)
    amp.scaler.update()
    scheduler.step()
    return loss, logits


def train_one_epoch(state: FitState, loader, normalize, callbacks: list[Callback], mix=None) -> dict:
    """One pass over ``loader``; returns this epoch's train loss, accuracy and images/s over every process.

    Args:
        mix: ``mix(x, y) -> (x, target)``: mixup/cutmix/label smoothing of the batch (None: targets = labels).
            Accuracy is always counted against the unmixed labels.
    """
    device = state.amp.device
    state.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    state.correct = torch.zeros((), dtype=torch.int64, device=device)
    state.seen, state.batch, state.batches = 0, 0, len(loader)
    state.epoch_start = time.perf_counter()
    for x, y, _ in loader:
        y = y.to(device, non_blocking=True)
        x = normalize(x)
        x, target = mix(x, y) if mix is not None else (x, y)
        loss, logits = train_step(state.net, x, target, state.optimizer, state.scheduler, state.amp, state.task)
        state.loss_sum += loss.detach().double() * len(y)
        state.correct += state.task.correct(logits.detach(), y)
        state.seen += len(y)
        state.batch += 1
        _call(callbacks, "on_batch_end", state)
    totals = torch.stack([state.loss_sum, state.correct.double(),
                          torch.tensor(float(state.seen), dtype=torch.float64, device=device)])
    state.runtime.sum(totals)
    loss_sum, correct, seen = totals.tolist()  # the epoch's one read from the device
    seconds = time.perf_counter() - state.epoch_start
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "images_per_s": seen / seconds}


class Diverged(PipelineError):
    """The loss stopped being a finite number: the weights diverged (the checkpoints keep the last good epoch)."""


def check_finite(state: FitState, loss: float, which: str) -> None:
    """Stop the fold with one line when an epoch's loss is NaN or infinite, before any checkpoint takes its weights."""
    if math.isfinite(loss):
        return
    kept = f"epoch {state.epoch} (its checkpoints are kept)" if state.epoch else "none (nothing was saved)"
    raise Diverged(f"Fold {state.fold}, epoch {state.epoch + 1}: the {which} loss is {loss} and the weights diverged. "
                   "Likely causes: a learning rate too high for this model and batch (lower --lr), a large "
                   "--weight-decay, or fp16 overflow (try --precision bf16 or fp32). Last good epoch: "
                   f"{kept}; train again with the change under another --run-name.")


def fit(state: FitState, train_loader, validate, normalize, callbacks: list[Callback], mix=None) -> FitState:
    """Train from ``state.start_epoch`` to ``state.epochs`` unless a callback sets ``state.stop``.

    After each epoch the loop marks it ``improved`` (validation loss lower than the best by more
    than MIN_DELTA) and counts ``bad_epochs``; then the epoch-end callbacks run, in order.

    Args:
        state: the model, optimizer and the rest (callbacks may restore it at fit start).
        train_loader: the training loader; its sampler's ``set_epoch`` is called every epoch.
        validate: ``validate(model) -> dict`` of val_loss, val_acc and val_logloss, run after every epoch.
        normalize: the batch normaliser.
        callbacks: called in order at each hook.
        mix: the batch mixing of :func:`train_one_epoch`.
    """
    _call(callbacks, "on_fit_start", state)
    for epoch in range(state.start_epoch, state.epochs):
        if state.stop:
            break
        state.epoch = epoch
        train_loader.sampler.set_epoch(epoch)  # every process the same epoch
        state.net.train()
        _call(callbacks, "on_epoch_start", state)
        train = train_one_epoch(state, train_loader, normalize, callbacks, mix)
        check_finite(state, train["train_loss"], "training")
        val = validate(state.model)
        check_finite(state, val["val_loss"], "validation")
        state.row = {"fold": state.fold, "epoch": epoch, **train, **val,
                     "lr": max(g["lr"] for g in state.optimizer.param_groups),  # the head's, under layer decay
                     "seconds": time.perf_counter() - state.epoch_start}
        state.val_loss, state.candidate = state.select(val), state.model
        _call(callbacks, "on_validation_end", state)
        state.improved = state.val_loss < state.best_loss - MIN_DELTA
        if state.improved:
            state.best_loss, state.bad_epochs = state.val_loss, 0
        else:
            state.bad_epochs += 1
        _call(callbacks, "on_epoch_end", state)
    _call(callbacks, "on_fit_end", state)
    return state
