"""Blending runs: their out-of-fold predictions aligned photo by photo, weights fitted on out-of-fold
log-loss, and the weighted mean of their test predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.metrics import log_loss

from pipeline.choices import ENSEMBLE_METHODS
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import score
from pipeline.rundir import RunDir


@dataclass
class Blend:
    """Blend weights per run, the OOF scores of each run and of the blend, and the blended OOF itself."""

    runs: list[str]
    weights: list[float]
    method: str
    run_scores: dict[str, dict]
    blend_score: dict
    labels: np.ndarray | None = None
    oof: np.ndarray | None = None  # the blend's out-of-fold P(dog), row by row with ``labels``


def load_oof(run_dir: Path) -> pd.DataFrame:
    """A run's ``oof.csv`` (path,label,fold,prob_dog)."""
    return RunDir(run_dir).read_oof()


def oof_column(tta: str = "none") -> str:
    """The OOF column made the way ``tta`` predicts the test set."""
    return "prob_dog_hflip" if tta == "hflip" else "prob_dog"


def aligned_oof(run_dirs: list[Path], tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Labels and an (images x runs) matrix of OOF probabilities; refuses runs trained on other folds.

    Args:
        run_dirs: the runs.
        tta: the test-time augmentation the test set is predicted with: the OOF predictions made the
            same way are the ones blend weights and the calibration are fitted on.
    """
    oofs = [load_oof(r).sort_values("path", kind="stable").reset_index(drop=True) for r in run_dirs]
    ref = oofs[0]
    for run, oof in zip(run_dirs[1:], oofs[1:], strict=True):
        if len(oof) != len(ref) or not (oof.path.equals(ref.path) and oof.fold.equals(ref.fold)):
            raise ConfigError(f"Runs {run_dirs[0].name} and {run.name} were not trained on the same folds "
                              "(or not on the same folds' images); blend only runs made from one folds.csv.")
    return ref.label.to_numpy(), np.column_stack([o[oof_column(tta)].to_numpy() for o in oofs])


def fit_weights(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the blend's log-loss on OOF predictions.

    The result is never worse than the best single run: each run alone is a candidate.
    """
    n_runs = probs.shape[1]
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)

    def loss(w):
        return log_loss(labels, np.clip(clipped @ w, 1e-7, 1 - 1e-7), labels=[0, 1])

    candidates = [np.eye(n_runs)[i] for i in range(n_runs)] + [np.full(n_runs, 1 / n_runs)]
    fit = minimize(loss, candidates[-1], method="SLSQP", bounds=[(0, 1)] * n_runs,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    if fit.success:
        candidates.append(np.clip(fit.x, 0, None) / np.clip(fit.x, 0, None).sum())
    return min(candidates, key=loss)


def blend_runs(run_dirs: list[Path], method: str = "fit", tta: str = "none") -> Blend:
    """Weights for ``run_dirs``: ``mean`` (equal) or ``fit`` (see :func:`fit_weights`), on the OOF
    predictions made as ``tta`` predicts the test set."""
    if method not in ENSEMBLE_METHODS:
        raise ConfigError(f"--ensemble must be one of {', '.join(ENSEMBLE_METHODS)}, got {method!r}.")
    labels, probs = aligned_oof(run_dirs, tta)
    weights = fit_weights(labels, probs) if method == "fit" and len(run_dirs) > 1 else \
        np.full(len(run_dirs), 1 / len(run_dirs))
    return Blend(runs=[Path(r).name for r in run_dirs], weights=[float(w) for w in weights], method=method,
                 run_scores={Path(r).name: score(labels, probs[:, i]) for i, r in enumerate(run_dirs)},
                 blend_score=score(labels, probs @ weights), labels=labels, oof=probs @ weights)


def blend_predictions(preds: list[pd.DataFrame], weights: list[float]) -> pd.DataFrame:
    """Weighted mean of several runs' ``id, prob_dog`` tables (same ids required)."""
    ids = preds[0].id.sort_values().to_numpy()
    for p in preds[1:]:
        if not np.array_equal(p.id.sort_values().to_numpy(), ids):
            raise DataError("The runs' test predictions cover different ids; predict them on one test.csv.")
    table = np.column_stack([p.set_index("id").loc[ids, "prob_dog"].to_numpy() for p in preds])
    return pd.DataFrame({"id": ids, "prob_dog": table @ np.asarray(weights)})
