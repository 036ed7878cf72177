"""The metric of a submission to one of MLE-bench's image competitions, computed here with scikit-learn (MAP@5 by
hand) against the held-out digits of tests/mlebench_layouts.py, independently of the pipeline; it also checks each
cell's form (whole grades, numbers in range, probabilities, known names). Used by tests/test_mlebench_end_to_end.py
and benchmarks/competitions.py --mlebench.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, log_loss, mean_squared_error, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

from tests.mlebench_layouts import CompetitionData


def map_at_5(truth: list[str], rows: list[list[str]]) -> float:
    """Mean average precision at 5 with one true name per row: 1/rank of the truth among the first five, else 0."""
    return float(np.mean([1 / (r[:5].index(t) + 1) if t in r[:5] else 0.0 for t, r in zip(truth, rows, strict=True)]))


def score(data: CompetitionData, sub: pd.DataFrame, sample: pd.DataFrame) -> float:
    """The competition's metric of ``sub`` (read as text, indexed by id) on the held-out digits, computed here;
    ``sample`` is the competition's sample submission (its columns after the id are the ones scored)."""
    truth = data.truth.set_index(data.truth["id"].astype(str)).label.loc[sub.index]
    value_columns = list(sample.columns[1:])
    if data.kind == "single" and len(value_columns) > 1:  # leaf: a probability per species, the multi-class log-loss
        values = sub[value_columns].astype(float).to_numpy()
        values = np.clip(values / values.sum(axis=1, keepdims=True), 1e-15, 1 - 1e-15)
        return float(log_loss(truth.tolist(), values, labels=value_columns))
    if data.kind == "single":
        (column,) = value_columns
        if data.positive is not None:  # P(positive): ROC-AUC
            return float(roc_auc_score(truth == data.positive, sub[column].astype(float)))
        assert set(sub[column]) <= set(data.classes)
        return float(accuracy_score(truth.tolist(), sub[column].tolist()))
    if data.kind == "ordinal":  # quadratic weighted kappa of whole grades
        (column,) = value_columns
        assert sub[column].str.fullmatch("[0-4]").all(), "grades must be whole numbers 0-4"
        return float(cohen_kappa_score(truth.astype(int), sub[column].astype(int), weights="quadratic"))
    if data.kind == "regression":  # RMSE of numbers in [1, 100]
        (column,) = value_columns
        values = sub[column].astype(float)
        assert values.between(1, 100).all()
        return float(np.sqrt(mean_squared_error(truth.astype(float), values)))
    if data.kind == "topk":  # MAP@5 of up to five distinct known names
        (column,) = value_columns
        rows = sub[column].str.split(" ").tolist()
        assert all(1 <= len(r) <= 5 and len(set(r)) == len(r) and set(r) <= set(data.classes) for r in rows)
        return map_at_5(truth.tolist(), rows)
    if len(value_columns) > 1:  # a probability per column: the mean of the sample's columns' ROC-AUC
        values = sub[value_columns].astype(float)
        assert ((values >= 0) & (values <= 1)).all().all()
        return float(np.mean([roc_auc_score([c in labels for labels in truth], values[c]) for c in value_columns]))
    (column,) = value_columns  # space-separated names: micro F1 of the label sets
    predicted = sub[column].str.split(" ").tolist()
    assert all(p and set(p) <= set(data.classes) for p in predicted)
    binarizer = MultiLabelBinarizer(classes=data.classes)
    return float(f1_score(binarizer.fit_transform(truth.tolist()), binarizer.transform(predicted), average="micro"))
