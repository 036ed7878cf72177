"""``--tta auto``: the test-time views chosen on the out-of-fold predictions, not guessed.

Training keeps each fold's out-of-fold predictions under every view that keeps the competition's images their
class (the mirror, the zoom, and for tiles seen from above the flips and turns). Greedy forward selection over
those views: start from the image alone, add the view whose average with the chosen ones scores best on the
out-of-fold predictions of the submitted blend, stop when no view helps. A view is added only when the
competition's metric does not get worse and the metric or the log-loss gets better (accuracy moves in steps of
one photo; log-loss breaks its ties), so the choice never raises the out-of-fold metric.

Hand-written: the selection is a dozen lines over :func:`pipeline.predict.ensemble.blend_runs`; no library
chooses test-time views from out-of-fold tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.competitions.spec import Competition, tta_name
from pipeline.metrics import LOWER_IS_BETTER, METRIC_KEYS, metric_value
from pipeline.predict.ensemble import blend_runs, load_oof

EPS = 1e-12


@dataclass
class TtaChoice:
    """The chosen policy (views joined by ``+``, or ``none``), the metric it was chosen on, and each step:
    ``{"views", "metric", "log_loss"}`` from the image alone to the chosen set."""

    policy: str
    metric: str
    candidates: list[str]
    steps: list[dict] = field(default_factory=list)


def available_views(run_dirs: list[Path], comp: Competition) -> list[str]:
    """The views that keep the class and whose out-of-fold predictions every run has."""
    columns = [set(load_oof(r).columns) for r in run_dirs]
    return [v for v in comp.allowed_views() if all(set(comp.prob_columns(v)) <= c for c in columns)]


def choose_tta(run_dirs: list[Path], comp: Competition, metric: str, ensemble: str = "fit") -> TtaChoice:
    """Greedy forward selection of TTA views on the out-of-fold predictions of the blend of ``run_dirs``.

    Args:
        run_dirs: the runs blended.
        comp: their competition (which views keep the class).
        metric: what the submission is scored by (accuracy, log_loss, roc_auc, f1_micro, f1_macro).
        ensemble: how the runs are blended (``fit`` or ``mean``), refitted for every candidate set.
    """
    if comp.target.kind == "single":
        metric = METRIC_KEYS.get(metric, metric)
    lower = metric in LOWER_IS_BETTER
    candidates = available_views(run_dirs, comp)

    def evaluate(views: list[str]) -> dict:
        scores = blend_runs(run_dirs, ensemble, tta_name(views)).blend_score
        tie = scores["log_loss"] if scores.get("log_loss") is not None else scores.get("rmse", 0.0)
        return {"views": tta_name(views), "metric": metric_value(scores, metric), "log_loss": tie}

    def better(new: dict, old: dict) -> bool:
        if new["metric"] is None or old["metric"] is None:  # ROC-AUC of a fold set with one class: log-loss alone
            return new["log_loss"] < old["log_loss"] - EPS
        gain = (old["metric"] - new["metric"]) if lower else (new["metric"] - old["metric"])
        return gain >= -EPS and (gain > EPS or new["log_loss"] < old["log_loss"] - EPS)

    def rank(step: dict) -> tuple:
        m = step["metric"] if step["metric"] is not None else 0.0
        return (m if lower else -m, step["log_loss"])

    chosen: list[str] = []
    steps = [evaluate(chosen)]
    while True:
        trials = [evaluate([*chosen, v]) for v in candidates if v not in chosen]
        good = [t for t in trials if better(t, steps[-1])]
        if not good:
            break
        best = min(good, key=rank)
        chosen = best["views"].split("+")
        steps.append(best)
    return TtaChoice(policy=tta_name(chosen), metric=metric, candidates=candidates, steps=steps)
