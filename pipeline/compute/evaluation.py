"""Running a model over a loader: mixed precision (:class:`Amp`) and one evaluation pass (:func:`evaluate`), shared by
training (validation, out-of-fold predictions) and prediction (the test photos)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.compute.runtime import Runtime
from pipeline.compute.views import view_of
from pipeline.targets.task import Task

_logger = logging.getLogger(__name__)

_BINARY = Task(2)  # the default task: two classes, one logit


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

    def load_scaler(self, saved: dict) -> None:
        """Restore the loss scale a checkpoint saved, when both it and this run scale losses.

        A scaler saved disabled (CPU, fp32, bf16) holds ``{}``, which an enabled one refuses to load; settings
        may change on ``--resume`` (a run started in bf16 or on the CPU, continued on a T4 in fp16), so an
        empty state starts the scale afresh, as a new run does, and an enabled one is ignored by a disabled
        scaler.
        """
        if saved and self.scaler.is_enabled():
            self.scaler.load_state_dict(saved)
        elif self.scaler.is_enabled():
            _logger.info("the checkpoint was trained without loss scaling; fp16 starts with a fresh loss scale")

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's logits as float32: one per image for a one-logit model, else (n, K)."""
        with self.autocast():
            out = model(x).float()
            return out.view(-1) if out.shape[-1] == 1 else out


@dataclass
class Predictions:
    """Row indices into the loader's dataset, the probabilities per row (P(positive) for two classes, else
    (n, K)) and the mean loss (NaN without labels)."""

    rows: np.ndarray
    probs: np.ndarray
    loss: float


@torch.inference_mode()
def evaluate(model: nn.Module, loader, normalize, amp: Amp, runtime: Runtime | None = None,
             hflip: bool = False, task: Task | None = None, view: str | None = None) -> Predictions:
    """The probabilities of every image of ``loader``, each image once, on every process.

    Args:
        model: the plain module (never a DDP wrapper: evaluation needs no collective).
        loader: a loader over ``(image, label, row)``; a sharded one gives each process a part.
        normalize: the batch normaliser (uint8 -> normalised float on the device).
        amp: autocast settings.
        runtime: gathers the parts of every process (None: this process alone).
        hflip: also predict each image mirrored and average the two probabilities.
        task: what the outputs mean (default: two classes, one logit).
        view: predict the images as this TTA view shows them (:func:`pipeline.compute.views.view_of`).
    """
    task = task or _BINARY
    model.eval()
    probs, rows, losses = [], [], []
    for x, y, idx in loader:
        x = view_of(normalize(x), view)
        logits = amp.logits(model, x)
        p = task.probs(logits)
        if hflip:
            p = (p + task.probs(amp.logits(model, torch.flip(x, dims=[3])))) / 2
        y = y.to(logits.device, non_blocking=True)
        if loader.dataset.labels is not None:
            losses.append(task.loss(logits, y if task.binary else y.clamp(min=0), reduction="none"))
        probs.append(p)
        rows.append(idx)
    rows_np = torch.cat(rows).numpy()
    probs_np = torch.cat(probs).cpu().numpy()
    losses_np = torch.cat(losses).cpu().numpy() if losses else np.full(len(rows_np), np.nan, dtype=np.float32)
    rows_np, probs_np, losses_np = (runtime or Runtime(amp.device, amp.dtype)).gather_rows(rows_np, probs_np, losses_np)
    labelled = loader.dataset.labels is not None
    loss = float(losses_np.astype(np.float64).sum() / len(rows_np)) if labelled else float("nan")
    return Predictions(rows_np, probs_np, loss)
