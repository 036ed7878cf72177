"""``single``: one label per image out of K classes (two classes keep one logit), cross-entropy, softmax or sigmoid;
and ``topk``: the same model, written as the k most likely names with the "new" class placed by a threshold fitted
on the out-of-fold predictions (Humpback Whale, MAP@k)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.metrics import log_loss, map_at_k, score
from pipeline.targets.base import Fitted, Kind, keep_better


class Single(Kind):
    name = "single"
    label_kinds = ("01", "probability", "class", "probabilities")
    class_indices = True

    @property
    def binary(self) -> bool:
        return self.comp.n_classes == 2

    @property
    def outputs(self) -> int:
        return 1 if self.binary else self.comp.n_classes

    def names(self) -> list[str]:
        return [self.comp.positive] if self.binary else list(self.comp.classes)

    def task(self):
        from pipeline.targets.task import Task

        return Task(self.comp.n_classes)

    def mix(self, recipe):
        from pipeline.targets.mixing import make_mix

        return make_mix(self.comp.n_classes, recipe.mixup, recipe.cutmix, recipe.mix_prob, recipe.label_smoothing)

    def score(self, labels, probs) -> dict:
        return score(labels, probs)

    def blend_loss(self, labels, probs) -> float:
        return log_loss(labels, probs)


class TopK(Single):
    """Single-label training; the submission lists the k most likely classes, best first, with the ``new`` class
    inserted before the first class less likely than the fitted threshold (when it is not already above)."""

    name = "topk"
    label_kinds = ("names",)

    def _probs(self, probs) -> np.ndarray:
        p = np.asarray(probs, dtype=np.float64)
        return np.column_stack([1 - p, p]) if p.ndim == 1 else p

    def ranked(self, probs, threshold: float | None = None) -> list[list[str]]:
        """Each row's k names, best first; with ``threshold`` the new class goes where the probabilities fall
        below it."""
        p, classes, k = self._probs(probs), list(self.comp.classes), self.target.k
        new = classes.index(self.target.new) if self.target.new in classes else None
        order = np.argsort(-p, axis=1, kind="stable")
        rows = []
        for i, ranks in enumerate(order):
            ranks = list(ranks)
            if threshold is not None and new is not None:
                ranks.remove(new)
                at = next((j for j, c in enumerate(ranks) if p[i, c] < threshold), len(ranks))
                ranks.insert(at, new)
            rows.append([classes[c] for c in ranks[:k]])
        return rows

    def score(self, labels, probs) -> dict:
        truth = [self.comp.classes[i] for i in np.asarray(labels).astype(int)]
        return score(labels, probs) | {"map_at_k": map_at_k(truth, self.ranked(probs), self.target.k)}

    def fit(self, labels, probs, metric: str) -> Fitted | None:
        if self.target.new is None or metric != "map_at_k":
            return None
        truth = [self.comp.classes[i] for i in np.asarray(labels).astype(int)]

        def value(t):
            return map_at_k(truth, self.ranked(probs, t), self.target.k)

        before = map_at_k(truth, self.ranked(probs), self.target.k)
        grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, 101), np.geomspace(1e-4, 0.05, 20)]))
        best = max(grid, key=value)
        after = value(best)
        applied = keep_better(metric, before, after)
        return Fitted("new-class threshold", metric, {"threshold": float(best) if applied else None},
                      before, after if applied else before, applied)

    def written(self, p, fmt, fitted) -> dict[str, np.ndarray]:
        threshold = fitted.params.get("threshold") if fitted is not None and fitted.applied else None
        names = [" ".join(row) for row in self.ranked(p[:, 0] if p.shape[1] == 1 else p, threshold)]
        return {fmt.header[1]: np.asarray(names, dtype=object)}

    def cell_problems(self, cells: pd.DataFrame, fmt) -> list[str]:
        from pipeline.predict.formats import listing

        tokens = cells[1].str.split(" ")
        unknown = sorted({t for row in tokens for t in row if t and t not in self.comp.classes})
        too_many = cells[1][tokens.map(len) > self.target.k]
        problems = [f"{len(unknown)} name(s) are not classes: {listing(unknown, repr)}."] if unknown else []
        if len(too_many):
            problems.append(f"{len(too_many)} row(s) list more than {self.target.k} names: "
                            f"{listing(too_many.tolist(), repr)}.")
        return problems
