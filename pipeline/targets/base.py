"""What every target kind answers (:class:`Kind`), and the post-processing record a kind fits on out-of-fold
predictions (:class:`Fitted`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.metrics import metric_value, signed


class LabelSet(str):
    """A multilabel catalogue label (the label indices, ascending, space-separated): text that is a label, not the
    reason an image has none (:meth:`pipeline.data.labelling.Labeller.train_label`)."""


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
    min_classes = 2  # the fewest classes a competition of this kind may have
    label_kinds: tuple[str, ...] = ()  # the submission label kinds (spec.LABEL_KINDS) it writes
    class_indices = False  # its training targets are class indices (soft (n, K) rows for pseudo-labels and mixup)

    def __init__(self, comp):
        self.comp, self.target = comp, comp.target

    # ---- the labels file -------------------------------------------------------------------------------------
    def needed_columns(self) -> list[str]:
        """The labels file's columns this kind reads (besides the id)."""
        return [self.comp.train.label_column]

    def row_labels(self, table: pd.DataFrame, normal) -> pd.Series:
        """Each labels-file row's label as text (``normal``: the form names are compared in)."""
        return table[self.comp.train.label_column].map(normal)

    def classes_found(self, values) -> tuple[str, ...]:
        """The classes read off the labels' texts (when the spec takes them from the data)."""
        return self.comp.class_order(values)

    def catalogue_label(self, text: str, index: dict):
        """The catalogue's ``label`` of a row's text; a str ending in no label says why it has none."""
        return index.get(text, f"its label {text!r} is not one of the classes")

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

    def strata(self, labels) -> np.ndarray:
        """An integer per image that folds are stratified on."""
        return self.truth(labels)

    def fold_folds(self, assign, train: pd.DataFrame, *args) -> pd.DataFrame:
        """``assign(train, *args, names)`` (:func:`pipeline.data.folds.assign_folds`) stratified on
        :meth:`strata` (one label: the classes themselves), with the catalogue's labels kept."""
        if self.name in ("single", "topk"):
            return assign(train, *args, self.comp.classes)
        n_folds = args[0]
        _, strata, counts = np.unique(self.strata(train.label.to_numpy()), return_inverse=True, return_counts=True)
        rare = counts[strata] < n_folds  # too few to be in every fold: one stratum of the rare ones (or the largest)
        if rare.any():
            strata = np.where(rare, counts.size, strata)
            if rare.sum() < n_folds:
                strata = np.where(rare, np.argmax(counts), strata)
            _, strata = np.unique(strata, return_inverse=True)
        names = tuple(f"{self.name} stratum {s}" for s in range(int(strata.max()) + 1))
        folds = assign(train.assign(label=strata), *args, names)
        folds["label"] = train.label.to_numpy()
        return folds

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
