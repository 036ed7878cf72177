"""Scores of predictions against labels, and the predictions worth a look (the most confidently wrong).

Predictions are P(positive) per image for two classes (a 1-D array) or (n, K) class probabilities.

The competitions' metrics (:data:`METRICS`, as a spec names them) are computed as MLE-bench's graders compute them,
with scikit-learn: log-loss on rows rescaled to sum 1 (clipped away from 0 and 1), ROC-AUC, the mean of per-column
ROC-AUCs, quadratic weighted kappa on whole grades, micro and macro F1 (multi-label through a label indicator
matrix), RMSE, and MAP@k as Kaggle defines it (each row's precision at the rank of its one true name, 0 when the
first k miss it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# what a competition's metric is called in the scores (micro-averaged F1 of single-label classes is accuracy)
METRIC_KEYS = {"accuracy": "accuracy", "log_loss": "log_loss", "roc_auc": "roc_auc", "f1_micro": "accuracy",
               "f1_macro": "f1_macro"}
LOWER_IS_BETTER = {"log_loss", "rmse"}
EPS = 1e-15  # the clip of a log-loss grader (scikit-learn's own before 1.5)


def log_loss(labels, probs) -> float:
    """Multi-class log-loss with each row rescaled to sum 1 and clipped to [EPS, 1 - EPS] (Kaggle's and the graders'
    way); ``probs`` (n,) is P(class 1) of two classes."""
    p = np.asarray(probs, dtype=np.float64)
    p = np.column_stack([1 - p, p]) if p.ndim == 1 else p
    p = np.clip(p / p.sum(axis=1, keepdims=True), EPS, 1 - EPS)
    return float(skm.log_loss(np.asarray(labels).astype(int), p / p.sum(axis=1, keepdims=True),
                              labels=list(range(p.shape[1]))))


def roc_auc(labels, probs) -> float | None:
    """ROC-AUC of P(positive) (None when one class is absent: it is undefined)."""
    labels = np.asarray(labels).astype(int)
    return float(skm.roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None


def mean_roc_auc(truth, probs) -> float | None:
    """The mean of the per-column ROC-AUCs of an (n, L) 0/1 truth and (n, L) probabilities (Plant Pathology 2020,
    RANZCR); columns with one class only are left out (None when every one is)."""
    truth, probs = np.asarray(truth), np.asarray(probs, dtype=np.float64)
    aucs = [roc_auc(truth[:, j], probs[:, j]) for j in range(truth.shape[1])]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs)) if aucs else None


def f1(truth, predicted, average: str, n_labels: int) -> float:
    """Micro or macro F1: of class indices (n,), or of (n, L) 0/1 label indicators (multi-label), there over the
    labels present in the truth or the predictions (as a MultiLabelBinarizer fitted on both sides sees them: the
    Plant Pathology 2021 and iMet graders' way; 0 when none is)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.ndim == 2:
        seen = truth.any(axis=0) | predicted.any(axis=0)
        if not seen.any():
            return 0.0
        truth, predicted = truth[:, seen], predicted[:, seen]
    labels = None if truth.ndim == 2 else list(range(n_labels))
    return float(skm.f1_score(truth, predicted, average=average, labels=labels, zero_division=0))


def names_f1(truth: list[str], predicted: list[str], average: str = "micro") -> float:
    """F1 of space-separated names, as the Plant Pathology 2021 and iMet graders compute it: each row split on
    spaces, both sides through one MultiLabelBinarizer."""
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer()
    binarizer.fit([t.split() for t in truth] + [p.split() for p in predicted])
    return float(skm.f1_score(binarizer.transform([t.split() for t in truth]),
                              binarizer.transform([p.split() for p in predicted]), average=average, zero_division=0))


def qwk(grades, predicted) -> float:
    """Quadratic weighted kappa of whole grades (APTOS: the grader refuses anything else)."""
    grades, predicted = np.asarray(grades), np.asarray(predicted)
    if not (np.all(np.mod(predicted, 1) == 0) and np.all(np.mod(grades, 1) == 0)):
        raise ValueError("quadratic weighted kappa is computed on whole grades")
    return float(skm.cohen_kappa_score(grades.astype(int), predicted.astype(int), weights="quadratic"))


def rmse(values, predicted) -> float:
    return float(np.sqrt(skm.mean_squared_error(np.asarray(values, dtype=np.float64),
                                                np.asarray(predicted, dtype=np.float64))))


def map_at_k(actual: list, predicted: list[list], k: int = 5) -> float:
    """Mean average precision at k with one true name per row (Kaggle's Humpback Whale metric, as MLE-bench grades
    it): a row scores 1/rank of its true name among its first k (repeats after the first ignored), 0 when absent."""
    total = 0.0
    for truth, guesses in zip(actual, predicted, strict=True):
        seen: list = []
        for g in guesses:
            if g not in seen:
                seen.append(g)
        seen = seen[:k]
        total += 1 / (seen.index(truth) + 1) if truth in seen else 0.0
    return total / len(actual) if len(actual) else 0.0


def selection(comp):
    """What a fold's epochs (and its EMA, its averaged weights) are compared on, as a figure to minimise from
    ``validate``'s dict: the validation loss for one-label competitions scored by accuracy or log-loss (the loss is
    the smooth form of both: accuracy on one fold moves in steps of one photo and ties often, and every figure
    measured so far was chosen that way), else the competition's metric (``val_metric``). A metric that cannot be
    computed on the fold (ROC-AUC of a fold with one class) counts as the worst finite figure."""
    if comp.target.kind == "single" and comp.metric in ("accuracy", "log_loss", "f1_micro"):
        return _validation_loss
    return _Signed(comp.metric)


def _validation_loss(val: dict) -> float:
    return val["val_loss"]


class _Signed:
    def __init__(self, metric: str):
        self.metric = metric

    def __call__(self, val: dict) -> float:
        value = val.get("val_metric")
        return 1e9 if value is None or not np.isfinite(value) else signed(self.metric, value)


def better(metric: str, new: float, old: float) -> bool:
    """Whether ``new`` is a better value of ``metric`` than ``old``."""
    return new < old if metric in LOWER_IS_BETTER else new > old


def signed(metric: str, value: float) -> float:
    """A metric's value as a figure to minimise (its negative when higher is better)."""
    return value if metric in LOWER_IS_BETTER else -value


def score(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, log-loss and ROC-AUC (None when a class is absent); for K classes also macro-averaged F1 (and
    the one-vs-rest ROC-AUC)."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.clip(probs, 1e-7, 1 - 1e-7)
        return {"n": len(labels),
                "accuracy": float(accuracy_score(labels, probs >= 0.5)),
                "log_loss": float(skm.log_loss(labels, probs, labels=[0, 1])),
                "roc_auc": float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None}
    k = probs.shape[1]
    probs = np.clip(probs, 1e-7, 1)
    probs = probs / probs.sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1)
    present = len(set(labels)) == k
    return {"n": len(labels),
            "accuracy": float(accuracy_score(labels, predicted)),
            "log_loss": float(skm.log_loss(labels, probs, labels=list(range(k)))),
            "roc_auc": float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(k))))
            if present else None,
            "f1_macro": float(f1_score(labels, predicted, average="macro", labels=list(range(k)), zero_division=0))}


def table_probs(frame: pd.DataFrame, columns: list[list[str]]) -> np.ndarray:
    """Predictions read off a table: the mean of its column groups (a TTA policy: the image and each view), as
    P(positive) for one column a group, else (n, K)."""
    probs = np.mean([frame[group].to_numpy(dtype=np.float64) for group in columns], axis=0)
    return probs[:, 0] if probs.shape[1] == 1 else probs


def metric_value(scores: dict, metric: str) -> float | None:
    """The competition's metric among ``scores`` (what :func:`score` or a target kind's score returns)."""
    return scores[metric] if metric in scores else scores.get(METRIC_KEYS.get(metric, metric))


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
