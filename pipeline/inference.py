"""Predict the test set with every fold of a run (with test-time augmentation), and blend runs."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize
from sklearn.metrics import log_loss

from pipeline.cache import open_cache
from pipeline.engine import Amp, evaluate, score
from pipeline.errors import ConfigError, DataError
from pipeline.fileio import write_csv, write_json
from pipeline.images import BatchNormalizer, ImageDataset, base_size_for, build_eval_transform, make_loader
from pipeline.models import build_model, normalization
from pipeline.rundir import RunDir
from pipeline.runtime import Runtime, default_workers, resolve_device, resolve_precision

_logger = logging.getLogger(__name__)
TTA_CHOICES = ("none", "hflip")
NEUTRAL = 0.5  # the prediction for a test photo that cannot be read: the competition scores every id


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def usable_folds(run: RunDir, partial: bool = False) -> list[int]:
    """The folds whose checkpoints predict the test set: every fold of a finished run.

    Args:
        run: the run.
        partial: accept a run with unfinished folds (with a warning naming them).
    """
    done, missing = run.finished_folds(), run.missing_folds()
    if not done:
        raise ConfigError(f"Run {run.name} has no finished fold; finish it with "
                          f"`pipeline train --run-name {run.name} --resume`.")
    if missing:
        listing = ", ".join(map(str, missing))
        if not partial:
            raise ConfigError(f"Run {run.name} has not finished folds {listing} (only {', '.join(map(str, done))}); "
                              f"finish it with `pipeline train --run-name {run.name} --resume`, or pass --partial to "
                              "predict with the finished folds alone.")
        _logger.warning("run %s: predicting with folds %s only; folds %s are not finished", run.name,
                        ", ".join(map(str, done)), listing)
    return done


def predict_run(run_dir: Path, test_csv: Path, *, tta: str = "hflip", device: str = "auto",
                batch_size: int | None = None, workers: int | None = None, progress: bool = False,
                reuse: bool = True, partial: bool = False) -> pd.DataFrame:
    """Average the test-set probabilities of every fold checkpoint of a run.

    Writes ``test_probs.csv`` (``id, prob_dog`` and one column per fold) and a JSON note of what
    produced it into the run, so a later ensemble with the same test set and TTA costs no model
    time (and still works after the checkpoints were deleted). A test photo the catalogue marked
    unreadable gets P(dog) = 0.5, with a warning naming its id.

    Args:
        run_dir: the run folder.
        test_csv: ``id,path[,readable]`` table of the test images (``data/test.csv``).
        tta: ``none`` or ``hflip`` (mean of the photo and its mirror, in probability space).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per batch (default: twice the training batch size).
        workers: loader processes (default: chosen from the machine).
        progress: show progress bars (cache build).
        reuse: return the saved predictions when the test set, TTA and checkpoints are unchanged.
        partial: predict with the finished folds of an unfinished run (see :func:`usable_folds`).
    """
    from pipeline.catalog import read_test

    if tta not in TTA_CHOICES:
        raise ConfigError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}.")
    run, test_csv = RunDir(run_dir), Path(test_csv)
    test = read_test(test_csv)
    folds = usable_folds(run, partial)
    ckpts = {k: run.best(k) for k in folds}
    gone = [str(c) for c in ckpts.values() if not c.exists()]
    note = {"tta": tta, "test_csv": str(test_csv), "test_sha256": _file_digest(test_csv), "folds": folds,
            "checkpoint_mtimes": None if gone else [c.stat().st_mtime_ns for c in ckpts.values()]}
    saved = json.loads(run.test_note_path.read_text()) if run.test_note_path.exists() else None
    if reuse and saved is not None and run.test_probs_path.exists():
        if saved == note:
            _logger.info("%s: reusing %s", run.name, run.test_probs_path)
            return pd.read_csv(run.test_probs_path)
        same_inputs = {k: saved.get(k) for k in ("tta", "test_sha256", "folds")} == \
            {k: note[k] for k in ("tta", "test_sha256", "folds")}
        if gone and same_inputs:
            _logger.warning("run %s: its checkpoints are gone (%s); using the test predictions saved in %s",
                            run.name, gone[0], run.test_probs_path)
            return pd.read_csv(run.test_probs_path)
    if gone:
        raise ConfigError(f"Run {run.name} has lost its checkpoints ({', '.join(gone[:2])}"
                          f"{' ...' if len(gone) > 2 else ''}) and has no saved test predictions for this test set "
                          f"and --tta {tta}; train it again (`pipeline train --run-name NEW ...`).")

    recipe, settings = run.recipe(), run.settings()
    dev = resolve_device(device)
    dtype = resolve_precision("auto" if settings.precision == "auto" or dev.type != "cuda" else settings.precision, dev)
    rt = Runtime(dev, dtype)
    readable = test[test.readable]
    unreadable = test.id[~test.readable].tolist()
    result = test[["id"]].copy()
    if len(readable):
        base = base_size_for(recipe.img_size)
        cache = open_cache(settings.data_dir, readable.path, base, enabled=settings.cache, progress=progress)
        dataset = ImageDataset(readable.path, None, base, build_eval_transform(recipe.img_size), cache)
        loader = make_loader(dataset, batch_size or recipe.batch_size * 2, shuffle=False, seed=0,
                             workers=workers if workers is not None else default_workers(dev), runtime=rt)
        amp = Amp(dev, dtype)
        for k, ckpt in ckpts.items():
            model = build_model(recipe.arch, recipe.img_size)
            model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
            conv = settings.channels_last and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
            model = model.to(dev, memory_format=torch.channels_last if conv else torch.contiguous_format)
            preds = evaluate(model, loader, BatchNormalizer(*normalization(model), dev, conv), amp,
                             hflip=tta == "hflip")
            result.loc[readable.index[preds.rows], f"fold{k}"] = preds.probs
    fold_cols = [f"fold{k}" for k in folds]
    result.insert(1, "prob_dog", result.reindex(columns=fold_cols).mean(axis=1).fillna(NEUTRAL))
    if unreadable:
        _logger.warning("%d test photo(s) could not be read (ids %s); they get P(dog) = %.1f so the submission "
                        "still covers every id", len(unreadable), ", ".join(map(str, unreadable[:10]))
                        + (" ..." if len(unreadable) > 10 else ""), NEUTRAL)
    write_csv(run.test_probs_path, result)
    write_json(run.test_note_path, note)
    return result


# ---- ensembling runs -------------------------------------------------------------------------
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


def oof_column(oof: pd.DataFrame, tta: str = "none") -> str:
    """The OOF column made the way ``tta`` predicts the test set (runs before hflip OOF have only prob_dog)."""
    return "prob_dog_hflip" if tta == "hflip" and "prob_dog_hflip" in oof.columns else "prob_dog"


def aligned_oof(run_dirs: list[Path], tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Labels and an (images x runs) matrix of OOF probabilities; refuses runs trained on other folds.

    Args:
        run_dirs: the runs.
        tta: the test-time augmentation the test set is predicted with: the OOF predictions made the
            same way are the ones blend weights and the calibration are fitted on.
    """
    oofs = [load_oof(r).sort_values("path", kind="stable").reset_index(drop=True) for r in run_dirs]
    ref = oofs[0]
    for run, oof in zip(run_dirs[1:], oofs[1:]):
        if len(oof) != len(ref) or not (oof.path.equals(ref.path) and oof.fold.equals(ref.fold)):
            raise ConfigError(f"Runs {run_dirs[0].name} and {run.name} were not trained on the same folds "
                              "(or not on the same folds' images); blend only runs made from one folds.csv.")
    return ref.label.to_numpy(), np.column_stack([o[oof_column(o, tta)].to_numpy() for o in oofs])


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
    if method not in ("mean", "fit"):
        raise ConfigError(f"--ensemble must be 'mean' or 'fit', got {method!r}.")
    labels, probs = aligned_oof(run_dirs, tta)
    weights = fit_weights(labels, probs) if method == "fit" and len(run_dirs) > 1 else \
        np.full(len(run_dirs), 1 / len(run_dirs))
    return Blend(runs=[Path(r).name for r in run_dirs], weights=[float(w) for w in weights], method=method,
                 run_scores={Path(r).name: score(labels, probs[:, i]) for i, r in enumerate(run_dirs)},
                 blend_score=score(labels, probs @ weights), labels=labels, oof=probs @ weights)


# ---- calibration ------------------------------------------------------------------------------
CALIBRATE_CHOICES = ("auto", "none", "temperature")


@dataclass
class Calibration:
    """One temperature T for the logits (P -> sigmoid(logit(P) / T)), fitted on out-of-fold predictions."""

    temperature: float
    oof_log_loss_before: float
    oof_log_loss_after: float

    def apply(self, probs) -> np.ndarray:
        return _sigmoid(_logit(np.asarray(probs, dtype=np.float64)) / self.temperature)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> Calibration:
    """The temperature that minimises the log-loss of ``probs`` against ``labels`` (temperature scaling,
    Guo et al. 2017; one parameter, so it cannot overfit the OOF set the way isotonic regression can).

    T > 1 softens over-confident predictions, T < 1 sharpens timid ones; the ranking (and so accuracy
    and ROC-AUC at threshold 0.5) never changes. T = 1 is kept when the fit would not lower the
    out-of-fold log-loss.
    """
    from scipy.optimize import minimize_scalar

    labels, z = np.asarray(labels).astype(int), _logit(np.asarray(probs, dtype=np.float64))

    def loss(t: float) -> float:
        return log_loss(labels, np.clip(_sigmoid(z / t), 1e-7, 1 - 1e-7), labels=[0, 1])

    before = loss(1.0)
    fit = minimize_scalar(loss, bounds=(0.05, 20.0), method="bounded")
    t = float(fit.x) if fit.success and loss(fit.x) < before else 1.0
    return Calibration(temperature=t, oof_log_loss_before=before, oof_log_loss_after=loss(t))


def blend_predictions(preds: list[pd.DataFrame], weights: list[float]) -> pd.DataFrame:
    """Weighted mean of several runs' ``id, prob_dog`` tables (same ids required)."""
    ids = preds[0].id.sort_values().to_numpy()
    for p in preds[1:]:
        if not np.array_equal(p.id.sort_values().to_numpy(), ids):
            raise DataError("The runs' test predictions cover different ids; predict them on one test.csv.")
    table = np.column_stack([p.set_index("id").loc[ids, "prob_dog"].to_numpy() for p in preds])
    return pd.DataFrame({"id": ids, "prob_dog": table @ np.asarray(weights)})
