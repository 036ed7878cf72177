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
from pipeline.competitions.spec import run_competition
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import signed, table_probs
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
    oof: np.ndarray | None = None  # the blend's out-of-fold probabilities ((n,) or (n, K)), row by row with labels
    probs: np.ndarray | None = None  # each run's out-of-fold probabilities, (n, runs) or (n, runs, K)
    folds: np.ndarray | None = None  # the fold of each row (whose model made its out-of-fold prediction)


def load_oof(run_dir: Path) -> pd.DataFrame:
    """A run's ``oof.csv`` (path,label,fold and its prediction columns)."""
    return RunDir(run_dir).read_oof()


def aligned_oof(run_dirs: list[Path], tta: str = "none", with_folds: bool = False) -> tuple[np.ndarray, ...]:
    """Labels and the runs' OOF probabilities, photo by photo: an (images x runs) matrix of P(positive) for two
    classes, (images x runs x K) for more; refuses runs trained on other folds or for other classes.

    Args:
        run_dirs: the runs.
        tta: the test-time augmentation the test set is predicted with: the OOF predictions made the
            same way are the ones blend weights and the calibration are fitted on.
        with_folds: also return each row's fold.
    """
    comps = [run_competition(RunDir(r).config()) for r in run_dirs]
    # photos by their key in the data folder: runs trained in two places (or moved since) align photo by photo
    oofs = [load_oof(r).sort_values("key", kind="stable").reset_index(drop=True) for r in run_dirs]
    ref = oofs[0]
    for run, oof, comp in zip(run_dirs[1:], oofs[1:], comps[1:], strict=True):
        if comp.classes != comps[0].classes:
            raise ConfigError(f"Runs {run_dirs[0].name} and {run.name} were trained for other classes; blend only "
                              "runs of one competition.")
        if len(oof) != len(ref) or not (oof.key.equals(ref.key) and oof.fold.equals(ref.fold)):
            raise ConfigError(f"Runs {run_dirs[0].name} and {run.name} were not trained on the same folds "
                              "(or not on the same folds' images); blend only runs made from one folds.csv.")
    missing = [c for group in comps[0].policy_columns(tta) for c in group if c not in ref.columns]
    if missing:
        raise ConfigError(f"Run {run_dirs[0].name} has no out-of-fold predictions with --tta {tta} ({missing[0]}): "
                          "predict with a TTA its competition keeps them for (e.g. --tta none).")
    probs = [table_probs(o, comps[0].policy_columns(tta)) for o in oofs]
    out = ref.label.to_numpy(), np.stack(probs, axis=1)
    return (*out, ref.fold.to_numpy()) if with_folds else out


def mixed(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted blend of :func:`aligned_oof`'s probabilities: (n,) or (n, K)."""
    return probs @ weights if probs.ndim == 2 else np.einsum("nrk,r->nk", probs, weights)


def fit_weights(labels: np.ndarray, probs: np.ndarray, comp=None) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the blend's log-loss on OOF predictions (another target
    kind than one label: its smooth loss, then the candidate with the best OOF metric of the competition).

    The result is never worse than the best single run: each run alone is a candidate.
    """
    n_runs = probs.shape[1]
    if comp is not None and comp.target.kind != "single":
        kind = comp.kind

        def loss(w):
            return kind.blend_loss(labels, mixed(probs, w))

        candidates = _candidates(loss, n_runs)
        return min(candidates, key=lambda w: signed(comp.metric, kind.metric(labels, mixed(probs, w))))
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    classes = [0, 1] if probs.ndim == 2 else list(range(probs.shape[2]))

    def loss(w):
        blend = mixed(clipped, w)
        blend = np.clip(blend, 1e-7, 1 - 1e-7) if blend.ndim == 1 else blend / blend.sum(axis=1, keepdims=True)
        return log_loss(labels, blend, labels=classes)

    return min(_candidates(loss, n_runs), key=loss)


def _candidates(loss, n_runs: int) -> list[np.ndarray]:
    """Each run alone, the equal blend, and the weights that minimise ``loss`` (SLSQP on the simplex)."""
    candidates = [np.eye(n_runs)[i] for i in range(n_runs)] + [np.full(n_runs, 1 / n_runs)]
    fit = minimize(loss, candidates[-1], method="SLSQP", bounds=[(0, 1)] * n_runs,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    if fit.success:
        candidates.append(np.clip(fit.x, 0, None) / np.clip(fit.x, 0, None).sum())
    return candidates


def blend_runs(run_dirs: list[Path], method: str = "fit", tta: str = "none") -> Blend:
    """Weights for ``run_dirs``: ``mean`` (equal) or ``fit`` (see :func:`fit_weights`), on the OOF
    predictions made as ``tta`` predicts the test set."""
    if method not in ENSEMBLE_METHODS:
        raise ConfigError(f"--ensemble must be one of {', '.join(ENSEMBLE_METHODS)}, got {method!r}.")
    labels, probs, folds = aligned_oof(run_dirs, tta, with_folds=True)
    comp = run_competition(RunDir(run_dirs[0]).config())
    weights = fit_weights(labels, probs, comp) if method == "fit" and len(run_dirs) > 1 else \
        np.full(len(run_dirs), 1 / len(run_dirs))
    blend = mixed(probs, weights)
    score = comp.kind.score
    return Blend(runs=[Path(r).name for r in run_dirs], weights=[float(w) for w in weights], method=method,
                 run_scores={Path(r).name: score(labels, probs[:, i]) for i, r in enumerate(run_dirs)},
                 blend_score=score(labels, blend), labels=labels, oof=blend, probs=probs, folds=folds)


def blend_predictions(preds: list[pd.DataFrame], weights: list[float]) -> pd.DataFrame:
    """Weighted mean of several runs' test predictions (``id`` and their ``prob_*`` columns; same ids required),
    sorted by id (numbers as numbers, names as text)."""
    ids = preds[0].id.sort_values().to_numpy()
    columns = [c for c in preds[0].columns if c.startswith("prob_")]
    for p in preds[1:]:
        if sorted(map(str, p.id)) != sorted(map(str, ids)):
            raise DataError("The runs' test predictions cover different ids; predict them on one test.csv.")
    tables = [p.set_index("id").loc[ids, columns].to_numpy(dtype=np.float64) for p in preds]
    blended = np.tensordot(np.asarray(weights), np.stack(tables), axes=1)
    return pd.DataFrame({"id": ids, **{c: blended[:, i] for i, c in enumerate(columns)}})
