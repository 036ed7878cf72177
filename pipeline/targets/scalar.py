"""One number per image: ``regression`` (a value in [low, high]: Pawpularity 1-100, RMSE) and ``ordinal`` (a grade
0..G-1: APTOS, quadratic weighted kappa). A value trains one output on the target scaled to [0, 1] through a sigmoid
and is written clipped to the range; a grade is read as the expected grade of a softmax over the grades (or, with
``ORDINAL_HEAD = "regression"``, one sigmoid as for a value) and written whole, cut at points fitted on the
out-of-fold predictions.

Measured on the digits (benchmarks/target_kinds.py, LeNet, 4 epochs, fold 0; CV / held-out): regression with binary
cross-entropy on the scaled target RMSE 11.58 / 11.66, with the squared error of the sigmoid 11.69 / 11.72 (BCE
kept); ordinal (grade = digit // 2) with one sigmoid kappa 0.848 / 0.867 (BCE), 0.826 / 0.868 (MSE), with the softmax
and the expected grade 0.903 / 0.920 (kept). The digits' grades do not look ordinal (a 1 and a 7 are alike), which
favours the classes: measure again on real graded photos.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.metrics import qwk, rmse
from pipeline.targets.base import Fitted, Kind, keep_better

LOSS = {"regression": "bce", "ordinal": "bce"}  # bce | mse, per kind (measured: see the module notes)
ORDINAL_HEAD = "classes"  # classes (softmax, expected grade) | regression (one sigmoid): measured, module notes


class ScalarTask:
    """One logit per image, read as the scaled target through a sigmoid; ``loss``: ``bce`` (binary cross-entropy
    with the scaled target as a soft label) or ``mse`` (squared error of the sigmoid)."""

    binary = False
    outputs = 1

    def __init__(self, loss: str = "bce"):
        self.kind = loss

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        z, t = logits.view(-1), target.float().view(-1)
        if self.kind == "mse":
            return nn.functional.mse_loss(torch.sigmoid(z), t, reduction=reduction)
        return nn.functional.binary_cross_entropy_with_logits(z, t, reduction=reduction)

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images within a tenth of the range of their target."""
        return ((torch.sigmoid(logits.view(-1)) - y.float().view(-1)).abs() <= 0.1).sum()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.view(-1))


class ScalarMix:
    """timm's Mixup/CutMix of a one-number target (no label smoothing: it would pull every value to the middle)."""

    def __init__(self, mixup: float, cutmix: float, prob: float):
        from timm.data import Mixup

        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, label_smoothing=0.0, num_classes=1,
                         multi_label=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2:
            return x, y
        x, target = self.mix(x, y.float().view(-1, 1))
        return x, target.view(-1)


class Scalar(Kind):

    def task(self):
        return ScalarTask(LOSS[self.name])

    def mix(self, recipe):
        return ScalarMix(recipe.mixup, recipe.cutmix, recipe.mix_prob) if (recipe.mixup or recipe.cutmix) and \
            recipe.mix_prob else None

    @property
    def outputs(self) -> int:
        return 1

    def value(self, p) -> np.ndarray:
        """Predictions (the sigmoid) in the target's units."""
        raise NotImplementedError

    def blend_loss(self, labels, probs) -> float:
        return float(np.mean((self.encode(labels) - np.asarray(probs, dtype=np.float64).reshape(-1)) ** 2))


class Regression(Scalar):
    name = "regression"
    label_kinds = ("number",)

    def __init__(self, comp):
        super().__init__(comp)
        t = comp.target
        if t.low is None or t.high is None or not t.high > t.low:
            raise ConfigError(f"Competition {comp.name}: a regression target needs its range, target.low < "
                              f"target.high (got {t.low} and {t.high}).")
        self.low, self.high = float(t.low), float(t.high)

    def names(self) -> list[str]:
        return list(self.comp.classes)

    def truth(self, labels) -> np.ndarray:
        return np.asarray(labels, dtype=np.float64)

    def encode(self, labels) -> np.ndarray:
        return np.clip((self.truth(labels) - self.low) / (self.high - self.low), 0, 1).astype(np.float32)

    def value(self, p) -> np.ndarray:
        return np.clip(self.low + np.asarray(p, dtype=np.float64).reshape(-1) * (self.high - self.low), self.low,
                       self.high)

    def score(self, labels, probs) -> dict:
        return {"n": len(labels), "rmse": rmse(self.truth(labels), self.value(probs))}

    def written(self, p, fmt, fitted) -> dict[str, np.ndarray]:
        return {fmt.header[1]: self.value(p)}

    def cell_problems(self, cells: pd.DataFrame, fmt) -> list[str]:
        from pipeline.predict.formats import listing

        values = pd.to_numeric(cells[1], errors="coerce")
        bad = cells[1][(cells[1] != "") & ~((values >= self.low) & (values <= self.high))]
        return [f"{len(bad)} value(s) are not numbers in [{self.low:g}, {self.high:g}]: "
                f"{listing(bad.tolist(), repr)}."] if len(bad) else []


class Ordinal(Scalar):
    """Grades 0..G-1. The head (``ORDINAL_HEAD``): ``classes``, one softmax output per grade trained with
    cross-entropy (label smoothing and mixup as for classes), read as the expected grade; or ``regression``, one
    sigmoid on the grade scaled to [0, 1]. Either way the grade written is the expected one cut at points fitted on
    the out-of-fold predictions for the metric."""

    name = "ordinal"
    label_kinds = ("integer",)

    def __init__(self, comp):
        super().__init__(comp)
        if comp.target.grades < 2:
            raise ConfigError(f"Competition {comp.name}: an ordinal target needs target.grades, the number of "
                              f"grades (2 or more), got {comp.target.grades}.")
        self.grades = comp.target.grades
        self.head = ORDINAL_HEAD if self.grades > 2 else "regression"  # two grades: one logit either way
        self.class_indices = self.head == "classes"

    @property
    def outputs(self) -> int:
        return self.grades if self.class_indices else 1

    def task(self):
        if not self.class_indices:
            return super().task()
        from pipeline.targets.task import Task

        return Task(self.grades)

    def mix(self, recipe):
        if not self.class_indices:
            return super().mix(recipe)
        from pipeline.targets.mixing import make_mix

        return make_mix(self.grades, recipe.mixup, recipe.cutmix, recipe.mix_prob, recipe.label_smoothing)

    def names(self) -> list[str]:
        return list(self.comp.classes) if self.class_indices else ["grade"]

    def encode(self, labels) -> np.ndarray:
        if self.class_indices:
            return self.truth(labels)
        return (self.truth(labels) / (self.grades - 1)).astype(np.float32)

    def value(self, p) -> np.ndarray:
        """The expected grade (classes head), or the scaled grade back in grades."""
        p = np.asarray(p, dtype=np.float64)
        if p.ndim == 2 and p.shape[1] == self.grades:
            return (p / p.sum(axis=1, keepdims=True)) @ np.arange(self.grades)
        return p.reshape(-1) * (self.grades - 1)

    def blend_loss(self, labels, probs) -> float:
        if not self.class_indices:
            return super().blend_loss(labels, probs)
        from pipeline.metrics import log_loss

        return log_loss(self.truth(labels), probs)

    def default_cuts(self) -> np.ndarray:
        return np.arange(self.grades - 1) + 0.5

    def graded(self, p, cuts=None) -> np.ndarray:
        """Whole grades: the predicted grade cut at ``cuts`` (default: rounded)."""
        return np.digitize(self.value(p), self.default_cuts() if cuts is None else np.sort(cuts)).astype(int)

    def score(self, labels, probs, cuts=None) -> dict:
        grades, graded = self.truth(labels), self.graded(probs, cuts)
        return {"n": len(grades), "qwk": qwk(grades, graded), "accuracy": float((grades == graded).mean()),
                "rmse": rmse(grades, self.value(probs))}

    def fit(self, labels, probs, metric: str) -> Fitted | None:
        """Cut points between the grades, each searched in turn over its neighbours' span (three passes, from the
        rounding cuts), kept when they raise the out-of-fold metric."""
        if metric not in ("qwk", "accuracy", "f1_micro"):
            return None
        key = "accuracy" if metric == "f1_micro" else metric

        def value(c):
            return self.score(labels, probs, c)[key]

        cuts = self.default_cuts()
        before = value(cuts)
        for _ in range(3):
            for j in range(len(cuts)):
                lo = cuts[j - 1] if j else -0.5
                hi = cuts[j + 1] if j + 1 < len(cuts) else self.grades - 0.5
                grid = np.linspace(lo, hi, 41)[1:-1]
                trials = [(value(np.concatenate([cuts[:j], [g], cuts[j + 1:]])), -abs(g - cuts[j]), g) for g in grid]
                cuts[j] = max(trials)[2]
        after = value(cuts)
        applied = keep_better(metric, before, after)
        return Fitted("cut points", metric, {"cuts": [float(c) for c in cuts] if applied else None}, before,
                      after if applied else before, applied)

    def written(self, p, fmt, fitted) -> dict[str, np.ndarray]:
        cuts = fitted.params["cuts"] if fitted is not None and fitted.applied else None
        return {fmt.header[1]: self.graded(p, cuts)}

    def cell_problems(self, cells: pd.DataFrame, fmt) -> list[str]:
        from pipeline.predict.formats import listing

        ok = cells[1].isin([str(g) for g in range(self.grades)])
        bad = cells[1][(cells[1] != "") & ~ok]
        return [f"{len(bad)} grade(s) are not whole numbers from 0 to {self.grades - 1} (the grader refuses "
                f"2.3): {listing(bad.tolist(), repr)}."] if len(bad) else []
