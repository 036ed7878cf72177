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

import numpy as np
import torch
from torch import nn

from pipeline.fileio import atomic_path
from pipeline.runtime import Runtime

_logger = logging.getLogger(__name__)

MIN_DELTA = 1e-4  # a validation loss must drop by more than this to count as better


class Amp:
    """Autocast and gradient scaling for one device and dtype, with no duplicated branches.

    One ``autocast(enabled=dtype != float32)`` and a ``GradScaler`` enabled only for fp16 (nanoGPT's
    way): fp32 and bf16 pay nothing for the scaler.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One logit per image, as float32."""
        with self.autocast():
            return model(x).float().view(-1)


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


def train_step(net: nn.Module, x: torch.Tensor, target: torch.Tensor, optimizer, scheduler, amp: Amp):
    """One optimizer step on a batch; returns the loss and the logits (still on the device, no sync).

    Args:
        net: the model (or its DDP/compiled wrapper), in train mode.
        x: the normalised batch.
        target: P(dog) per image (0/1 labels, or soft targets).
    """
    optimizer.zero_grad(set_to_none=True)
    logits = amp.logits(net, x)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
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
        loss, logits = train_step(state.net, x, target, state.optimizer, state.scheduler, state.amp)
        state.loss_sum += loss.detach().double() * len(y)
        state.correct += ((logits.detach() > 0).float() == y).sum()
        state.seen += len(y)
        state.batch += 1
        _call(callbacks, "on_batch_end", state)
    totals = torch.stack([state.loss_sum, state.correct.double(),
                          torch.tensor(float(state.seen), dtype=torch.float64, device=device)])
    state.runtime.sum(totals)
    loss_sum, correct, seen = totals.tolist()  # the epoch's one read from the device
    seconds = time.perf_counter() - state.epoch_start
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "images_per_s": seen / seconds}


@dataclass
class Predictions:
    """Row indices into the loader's dataset, P(dog) per row and the mean BCE loss (NaN without labels)."""

    rows: np.ndarray
    probs: np.ndarray
    loss: float


@torch.inference_mode()
def evaluate(model: nn.Module, loader, normalize, amp: Amp, runtime: Runtime | None = None,
             hflip: bool = False) -> Predictions:
    """P(dog) for every image of ``loader``, each image once, on every process.

    Args:
        model: the plain module (never a DDP wrapper: evaluation needs no collective).
        loader: a loader over ``(image, label, row)``; a sharded one gives each process a part.
        normalize: the batch normaliser (uint8 -> normalised float on the device).
        amp: autocast settings.
        runtime: gathers the parts of every process (None: this process alone).
        hflip: also predict each image mirrored and average the two probabilities.
    """
    model.eval()
    probs, rows, losses = [], [], []
    for x, y, idx in loader:
        x = normalize(x)
        logits = amp.logits(model, x)
        p = torch.sigmoid(logits)
        if hflip:
            p = (p + torch.sigmoid(amp.logits(model, torch.flip(x, dims=[3])))) / 2
        losses.append(nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.device), reduction="none"))
        probs.append(p)
        rows.append(idx)
    rows_np = torch.cat(rows).numpy()
    probs_np, losses_np = (torch.cat(t).cpu().numpy() for t in (probs, losses))
    rows_np, probs_np, losses_np = (runtime or Runtime(amp.device, amp.dtype)).gather_rows(rows_np, probs_np, losses_np)
    labelled = loader.dataset.labels is not None
    loss = float(losses_np.astype(np.float64).sum() / len(rows_np)) if labelled else float("nan")
    return Predictions(rows_np, probs_np, loss)


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
        val = validate(state.model)
        state.row = {"fold": state.fold, "epoch": epoch, **train, **val,
                     "lr": max(g["lr"] for g in state.optimizer.param_groups),  # the head's, under layer decay
                     "seconds": time.perf_counter() - state.epoch_start}
        state.val_loss, state.candidate = val["val_loss"], state.model
        _call(callbacks, "on_validation_end", state)
        state.improved = state.val_loss < state.best_loss - MIN_DELTA
        if state.improved:
            state.best_loss, state.bad_epochs = state.val_loss, 0
        else:
            state.bad_epochs += 1
        _call(callbacks, "on_epoch_end", state)
    _call(callbacks, "on_fit_end", state)
    return state


def score(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, log-loss and ROC-AUC (None when one class is absent)."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    labels = np.asarray(labels).astype(int)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return {"n": int(len(labels)),
            "accuracy": float(accuracy_score(labels, probs >= 0.5)),
            "log_loss": float(log_loss(labels, probs, labels=[0, 1])),
            "roc_auc": float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None}


# ---- the callbacks every fold uses -----------------------------------------------------------
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
        state.amp.scaler.load_state_dict(saved["scaler"])
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


def _set_rng_state(saved, runtime: Runtime) -> None:
    states = [saved] if isinstance(saved, dict) else saved  # runs from before per-process states
    own = states[runtime.rank] if runtime.rank < len(states) else states[0]
    torch.set_rng_state(own["torch"])
    if "numpy" in own:
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


class BinaryMix:
    """timm's Mixup/CutMix and label smoothing for a one-logit model: the soft target is the mixed
    batch's P(dog), ``target[:, 1]`` of timm's two-class soft labels.

    timm mixes a batch with its own mirror and needs an even batch; an odd last batch only gets
    the label smoothing. Its draws come from numpy's global generator, seeded per fold and saved
    in last.pt with the other random states.
    """

    def __init__(self, mixup: float, cutmix: float, prob: float, smoothing: float):
        from timm.data import Mixup

        self.smoothing = smoothing
        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, label_smoothing=smoothing,
                         num_classes=2) if (mixup or cutmix) and prob else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is not None and len(x) % 2 == 0:
            x, target = self.mix(x, y.long())
            return x, target[:, 1].to(y.dtype)
        return x, y * (1 - self.smoothing) + self.smoothing / 2


class ProgressBar(Callback):
    """Rich bars for the fold's epochs and the epoch's batches (main process only).

    The running loss and accuracy are read from the device every ``every`` batches, not every step.
    """

    def __init__(self, progress, every: int = 10):
        self.progress, self.every = progress, every
        self.epoch_task = self.batch_task = None

    def on_fit_start(self, state: FitState) -> None:
        self.epoch_task = self.progress.add_task(f"fold {state.fold}", total=state.epochs,
                                                 completed=state.start_epoch, info="")
        self.batch_task = self.progress.add_task("  batches", total=1, info="")

    def on_epoch_start(self, state: FitState) -> None:
        self.progress.reset(self.batch_task, total=None, info="")

    def on_batch_end(self, state: FitState) -> None:
        info = None
        if state.batch % self.every == 0 or state.batch == state.batches:
            loss, correct = state.loss_sum.item(), state.correct.item()
            rate = state.seen / max(1e-9, time.perf_counter() - state.epoch_start)
            info = f"loss {loss / state.seen:.4f} acc {correct / state.seen:.3f} {rate:.0f} img/s"
        self.progress.update(self.batch_task, total=state.batches, completed=state.batch,
                             **({"info": info} if info else {}))

    def on_epoch_end(self, state: FitState) -> None:
        r = state.row
        self.progress.update(self.epoch_task, advance=1, info=f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.3f}"
                             + (" *" if state.improved else ""))

    def on_fit_end(self, state: FitState) -> None:
        self.progress.remove_task(self.batch_task)
        self.progress.remove_task(self.epoch_task)
