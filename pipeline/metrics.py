"""Scores of predictions against labels, and the predictions worth a look (the most confidently wrong).

Predictions are P(positive) per image for two classes (a 1-D array) or (n, K) class probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# what a competition's metric is called in the scores (micro-averaged F1 of single-label classes is accuracy)
METRIC_KEYS = {"accuracy": "accuracy", "log_loss": "log_loss", "roc_auc": "roc_auc", "f1_micro": "accuracy",
               "f1_macro": "f1_macro"}
LOWER_IS_BETTER = {"log_loss"}


def score(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, log-loss and ROC-AUC (None when a class is absent); for K classes also macro-averaged F1 (and
    the one-vs-rest ROC-AUC)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.clip(probs, 1e-7, 1 - 1e-7)
        return {"n": len(labels),
                "accuracy": float(accuracy_score(labels, probs >= 0.5)),
                "log_loss": float(log_loss(labels, probs, labels=[0, 1])),
                "roc_auc": float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None}
    k = probs.shape[1]
    probs = np.clip(probs, 1e-7, 1)
    probs = probs / probs.sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1)
    present = len(set(labels)) == k
    return {"n": len(labels),
            "accuracy": float(accuracy_score(labels, predicted)),
            "log_loss": float(log_loss(labels, probs, labels=list(range(k)))),
            "roc_auc": float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(k))))
            if present else None,
            "f1_macro": float(f1_score(labels, predicted, average="macro", labels=list(range(k)), zero_division=0))}


def table_probs(frame: pd.DataFrame, columns: list[list[str]]) -> np.ndarray:
    """Predictions read off a table: the mean of its column groups (a TTA policy: the image and each view), as
    P(positive) for one column a group, else (n, K)."""
    probs = np.mean([frame[group].to_numpy(dtype=np.float64) for group in columns], axis=0)
    return probs[:, 0] if probs.shape[1] == 1 else probs


def metric_value(scores: dict, metric: str) -> float | None:
    """The competition's metric among ``scores`` (what :func:`score` returns)."""
    return scores.get(METRIC_KEYS.get(metric, metric))


def predicted_class(probs: np.ndarray) -> np.ndarray:
    """The class each row of predictions picks (two classes: P(positive) at or above 0.5 is class 1)."""
    probs = np.asarray(probs)
    return (probs >= 0.5).astype(int) if probs.ndim == 1 else probs.argmax(axis=1)


def most_confident_wrong(oof: pd.DataFrame, n: int, columns: list[str] | None = None) -> pd.DataFrame:
    """The ``n`` wrongly classified rows that were surest of their wrong class (two classes: the largest
    ``|P(positive) - label|``, threshold 0.5), with ``predicted`` (the class index) and ``confidence`` (the
    probability of the predicted class) columns.

    Args:
        oof: out-of-fold predictions with ``label`` and the probability columns.
        n: how many rows at most; ties keep the order of ``oof``.
        columns: the probability columns (default ``prob_dog``: P(positive) of two classes); several: one
            per class, in class order.
    """
    columns = columns or ["prob_dog"]
    probs = oof[columns].to_numpy(dtype=np.float64)
    probs = probs[:, 0] if len(columns) == 1 else probs
    predicted = predicted_class(probs)
    confidence = np.where(predicted == 1, probs, 1 - probs) if probs.ndim == 1 else probs.max(axis=1)
    is_wrong = predicted != oof.label.to_numpy()
    wrong = oof.assign(predicted=predicted, confidence=confidence)[is_wrong]
    order = np.argsort(-confidence[is_wrong], kind="stable")
    return wrong.iloc[order[:n]].reset_index(drop=True)


def confused_pairs(labels: np.ndarray, predicted: np.ndarray, n: int = 10) -> list[tuple[int, int, int]]:
    """The ``n`` most frequent mistakes as ``(true class, predicted class, count)``, most frequent first."""
    pairs = pd.Series(list(zip(np.asarray(labels).astype(int), np.asarray(predicted).astype(int), strict=True)))
    counts = pairs[[t != p for t, p in pairs]].value_counts(sort=False)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(t, p, int(c)) for (t, p), c in ranked[:n]]
