"""Scores of predictions against labels, and the predictions worth a look (the most confidently wrong)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def score(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, log-loss and ROC-AUC (None when one class is absent)."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    labels = np.asarray(labels).astype(int)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return {"n": len(labels),
            "accuracy": float(accuracy_score(labels, probs >= 0.5)),
            "log_loss": float(log_loss(labels, probs, labels=[0, 1])),
            "roc_auc": float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None}


def most_confident_wrong(oof: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` wrongly classified rows (threshold 0.5) with the largest ``|prob_dog - label|``.

    Args:
        oof: out-of-fold predictions with ``label`` and ``prob_dog`` columns.
        n: how many rows at most; ties keep the order of ``oof``.
    """
    wrong = oof[(oof.prob_dog >= 0.5).astype(int) != oof.label]
    error = (wrong.prob_dog - wrong.label).abs()
    order = np.argsort(-error.to_numpy(), kind="stable")
    return wrong.iloc[order[:n]].reset_index(drop=True)
