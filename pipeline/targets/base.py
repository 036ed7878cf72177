"""What every target kind answers (:class:`Kind`), and the post-processing record a kind fits on out-of-fold
predictions (:class:`Fitted`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.metrics import metric_value, signed


@dataclass
class Fitted:
    """Post-processing fitted on out-of-fold predictions: ``method``, its ``params`` (thresholds, cut points), the
    metric it was fitted for and the out-of-fold metric before and after (``applied``: it did better)."""

    method: str
    metric: str
    params: dict = field(default_factory=dict)
    oof_metric_before: float | None = None
    oof_metric_after: float | None = None
    applied: bool = True

    def to_dict(self) -> dict:
        return dict(vars(self))


class Kind:
    """A target kind (subclasses override what differs from one label out of K classes)."""

    name = ""
    label_kinds: tuple[str, ...] = ()  # the submission label kinds (spec.LABEL_KINDS) it writes
    class_indices = False  # its training targets are class indices (soft (n, K) rows for pseudo-labels and mixup)

    def __init__(self, comp):
        self.comp, self.target = comp, comp.target

    # ---- targets ---------------------------------------------------------------------------------------------
    @property
    def outputs(self) -> int:
        raise NotImplementedError

    def names(self) -> list[str]:
        """The prediction columns' names (``prob_<name>``)."""
        raise NotImplementedError

    def truth(self, labels) -> np.ndarray:
        """The catalogue's labels as the metric compares them."""
        return np.asarray(labels).astype(int)

    def encode(self, labels) -> np.ndarray:
        """The catalogue's labels as the training targets (float32)."""
        return self.truth(labels).astype(np.float32)

    def task(self):
        raise NotImplementedError

    def mix(self, recipe):
        """The batch mixing of the recipe's mixup, cutmix and label smoothing (None: targets are the labels)."""
        raise NotImplementedError

    # ---- scores ----------------------------------------------------------------------------------------------
    def score(self, labels, probs) -> dict:
        raise NotImplementedError

    def scores(self, labels, probs) -> dict:
        """:meth:`score` with the competition's metric first (cv.json, the runs table, the report)."""
        found = self.score(labels, probs)
        return {self.comp.metric: metric_value(found, self.comp.metric), **found}

    def metric(self, labels, probs, metric: str | None = None) -> float | None:
        return metric_value(self.score(labels, probs), metric or self.comp.metric)

    def blend_loss(self, labels, probs) -> float:
        """A smooth loss of blended out-of-fold predictions the blend weights are fitted on."""
        raise NotImplementedError

    # ---- post-processing ------------------------------------------------------------------------------------
    def fit(self, labels, probs, metric: str) -> Fitted | None:
        """Post-processing fitted on out-of-fold predictions for ``metric`` (None: none applies)."""
        return None

    # ---- the submission -------------------------------------------------------------------------------------
    def written(self, p: np.ndarray, fmt, fitted: Fitted | None) -> dict[str, np.ndarray]:
        """The submission's label column(s) from the predictions ``p`` ((n, columns))."""
        raise NotImplementedError

    def cell_problems(self, cells: pd.DataFrame, fmt) -> list[str]:
        """What is wrong with a submission's label cells (``cells``: text, its id column first)."""
        return []


def keep_better(metric: str, before: float, after: float) -> bool:
    return signed(metric, after) < signed(metric, before) - 1e-12
