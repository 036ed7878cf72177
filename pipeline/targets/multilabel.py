"""``multilabel``: any number of labels per image, one sigmoid per label and binary cross-entropy (label smoothing
and mixup apply to every label). The labels come from one 0/1 column per label (RANZCR, Plant Pathology 2020:
``target.columns``) or from one column of names joined by ``target.separator`` (Plant Pathology 2021, iMet).
Submissions are a probability per column (mean column-wise ROC-AUC), or the names above per-label thresholds fitted
on the out-of-fold predictions for F1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.metrics import f1, mean_roc_auc
from pipeline.targets.base import Fitted, Kind, keep_better

GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


class MultiLabelTask:
    """Loss, exact-match count and probabilities of a model with one logit per label."""

    binary = False

    def __init__(self, n_labels: int):
        self.n_labels = n_labels

    @property
    def outputs(self) -> int:
        return self.n_labels

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = logits.view(len(logits), -1)
        target = target.float().view(len(target), -1).expand_as(logits)
        per = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=1)
        return per.mean() if reduction == "mean" else per

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits.view(len(logits), -1)
        return ((logits > 0) == (y.view(len(y), -1) >= 0.5)).all(dim=1).sum()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.view(len(logits), -1))


class MultiLabelMix:
    """timm's Mixup/CutMix for dense multi-label targets, and label smoothing towards 0.5 (timm's multi-label
    smoothing: ``y (1 - eps) + eps / 2``); an odd batch gets the smoothing alone."""

    def __init__(self, n_labels: int, mixup: float, cutmix: float, prob: float, smoothing: float):
        from timm.data import Mixup

        self.smoothing = smoothing
        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, label_smoothing=smoothing,
                         num_classes=n_labels, multi_label=True) if (mixup or cutmix) and prob else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is not None and len(x) % 2 == 0:
            return self.mix(x, y.float())
        return x, y.float() * (1 - self.smoothing) + self.smoothing / 2


class MultiLabel(Kind):
    name = "multilabel"
    label_kinds = ("columns", "names")

    # ---- targets ---------------------------------------------------------------------------------------------
    @property
    def outputs(self) -> int:
        return self.comp.n_classes

    def names(self) -> list[str]:
        return list(self.comp.classes)

    def truth(self, labels) -> np.ndarray:
        """(n, L) 0/1 from the catalogue's ascending label indices ("0 3", "" for none)."""
        labels = np.asarray(labels)
        if labels.ndim == 2:
            return (labels >= 0.5).astype(int)
        out = np.zeros((len(labels), self.comp.n_classes), dtype=int)
        for i, text in enumerate(labels):
            for t in _tokens(text):
                out[i, t] = 1
        return out

    def task(self):
        return MultiLabelTask(self.comp.n_classes)

    def mix(self, recipe):
        if not (recipe.mixup or recipe.cutmix or recipe.label_smoothing):
            return None
        return MultiLabelMix(self.comp.n_classes, recipe.mixup, recipe.cutmix, recipe.mix_prob,
                             recipe.label_smoothing)

    # ---- scores ----------------------------------------------------------------------------------------------
    def score(self, labels, probs, thresholds=None) -> dict:
        truth, p = self.truth(labels), _matrix(probs)
        predicted = self.decide(p, thresholds)
        n_labels = truth.shape[1]
        return {"n": len(truth), "mean_roc_auc": mean_roc_auc(truth, p),
                "f1_micro": f1(truth, predicted, "micro", n_labels),
                "f1_macro": f1(truth, predicted, "macro", n_labels),
                "accuracy": float((predicted == truth).all(axis=1).mean()), "log_loss": self.blend_loss(truth, p)}

    def blend_loss(self, labels, probs) -> float:
        truth, p = self.truth(labels), np.clip(_matrix(probs), 1e-7, 1 - 1e-7)
        return float(-(truth * np.log(p) + (1 - truth) * np.log1p(-p)).mean())

    def decide(self, p: np.ndarray, thresholds=None) -> np.ndarray:
        """The labels each row is given: every one at or over its threshold (0.5 by default), and the likeliest
        one when none is (a row of names is never empty)."""
        p = _matrix(p)
        t = np.full(p.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        on = (p >= t).astype(int)
        none = ~on.any(axis=1)
        on[none, p[none].argmax(axis=1)] = 1
        return on

    # ---- post-processing ------------------------------------------------------------------------------------
    def fit(self, labels, probs, metric: str) -> Fitted | None:
        """Per-label thresholds for F1 (coordinate ascent over a 0.05 grid, two passes, from 0.5)."""
        if metric not in ("f1_micro", "f1_macro"):
            return None
        truth, p = self.truth(labels), _matrix(probs)
        average = metric.removeprefix("f1_")
        t = np.full(p.shape[1], 0.5)

        def value(th):
            return f1(truth, self.decide(p, th), average, truth.shape[1])

        before = value(t)
        for _ in range(2):
            for j in range(p.shape[1]):
                trials = [(value(np.concatenate([t[:j], [g], t[j + 1:]])), -abs(g - 0.5), g) for g in GRID]
                t[j] = max(trials)[2]
        after = value(t)
        applied = keep_better(metric, before, after)
        return Fitted("per-label thresholds", metric,
                      {"thresholds": dict(zip(self.comp.classes, map(float, t), strict=True)) if applied else None},
                      before, after if applied else before, applied)

    def thresholds(self, fitted: Fitted | None) -> np.ndarray | None:
        if fitted is None or not fitted.applied:
            return None
        return np.asarray([fitted.params["thresholds"][c] for c in self.comp.classes])

    # ---- the submission -------------------------------------------------------------------------------------
    def written(self, p, fmt, fitted) -> dict[str, np.ndarray]:
        if fmt.label == "columns":
            index = {c: i for i, c in enumerate(self.comp.classes)}
            return {c: np.clip(p[:, index[c]], 0, 1) for c in fmt.header[1:]}
        on = self.decide(p, self.thresholds(fitted))
        sep = self.target.separator or " "
        return {fmt.header[1]: np.asarray([sep.join(c for c, x in zip(self.comp.classes, row, strict=True) if x)
                                           for row in on], dtype=object)}

    def cell_problems(self, cells: pd.DataFrame, fmt) -> list[str]:
        from pipeline.predict.formats import listing

        if fmt.label == "columns":
            raw = cells.iloc[:, 1:]
            values = raw.apply(pd.to_numeric, errors="coerce")
            bad = raw[((raw != "") & ~((values >= 0) & (values <= 1))).any(axis=1)]
            return [f"{len(bad)} row(s) hold values that are not probabilities in [0, 1]: "
                    f"{listing((bad.iloc[:, 0] + '...').tolist(), repr)}."] if len(bad) else []
        sep = self.target.separator or " "
        unknown = sorted({n for v in cells[1] for n in v.split(sep) if n and n not in self.comp.classes})
        return [f"{len(unknown)} name(s) are not labels of the competition: {listing(unknown, repr)}."] \
            if unknown else []


def _tokens(text) -> list[int]:
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    return [int(float(t)) for t in str(text).split()]


def _matrix(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return p[:, None] if p.ndim == 1 else p
