"""Temperature calibration of out-of-fold probabilities (for log-loss formats)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import log_loss


@dataclass
class Calibration:
    """One temperature T for the logits (P -> sigmoid(logit(P) / T); K classes: softmax(log P / T)), fitted on
    out-of-fold predictions."""

    temperature: float
    oof_log_loss_before: float
    oof_log_loss_after: float

    def apply(self, probs) -> np.ndarray:
        return tempered(probs, self.temperature)


def tempered(probs, t: float) -> np.ndarray:
    """Probabilities with their logits divided by ``t``: P(positive) (n,) or class probabilities (n, K)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        return _sigmoid(_logit(p) / t)
    z = np.log(np.clip(p, 1e-7, 1)) / t
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> Calibration:
    """The temperature that minimises the log-loss of ``probs`` against ``labels`` (temperature scaling,
    Guo et al. 2017; one parameter, so it cannot overfit the OOF set the way isotonic regression can).

    T > 1 softens over-confident predictions, T < 1 sharpens timid ones; the ranking (and so accuracy
    and ROC-AUC at threshold 0.5) never changes. T = 1 is kept when the fit would not lower the
    out-of-fold log-loss.
    """
    from scipy.optimize import minimize_scalar

    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=np.float64)
    classes = [0, 1] if probs.ndim == 1 else list(range(probs.shape[1]))

    def loss(t: float) -> float:
        p = tempered(probs, t)
        return log_loss(labels, np.clip(p, 1e-7, 1 - 1e-7) if p.ndim == 1 else p, labels=classes)

    before = loss(1.0)
    fit = minimize_scalar(loss, bounds=(0.05, 20.0), method="bounded")
    t = float(fit.x) if fit.success and loss(fit.x) < before else 1.0
    return Calibration(temperature=t, oof_log_loss_before=before, oof_log_loss_after=loss(t))
