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

from pipeline.errors import ConfigError, DataError
from pipeline.fileio import write_csv, write_json
from pipeline.images import BatchNormalizer, ImageDataset, base_size_for, build_eval_transform
from pipeline.models import build_model, normalization
from pipeline.training import (Step, TrainConfig, default_workers, evaluate, make_loader, open_cache,
                               resolve_device, resolve_precision, score)

_logger = logging.getLogger(__name__)
TTA_CHOICES = ("none", "hflip")


def load_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig a run was trained with."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run folder (no config.json).")
    return TrainConfig(**json.loads(path.read_text())["config"])


def fold_checkpoints(run_dir: Path) -> list[Path]:
    """The ``best.pt`` of every finished fold (one with its ``oof.csv``), in fold order."""
    done = sorted(Path(run_dir).glob("fold*/oof.csv"), key=lambda p: int(p.parent.name[4:]))
    ckpts = [p.parent / "best.pt" for p in done]
    if not ckpts:
        raise ConfigError(f"Run {run_dir} has no finished fold; finish it with `pipeline train --resume`.")
    return ckpts


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def predict_run(run_dir: Path, test_csv: Path, *, tta: str = "hflip", device: str = "auto",
                batch_size: int | None = None, workers: int | None = None, progress: bool = False,
                reuse: bool = True) -> pd.DataFrame:
    """Average the test-set probabilities of every fold checkpoint of a run.

    Writes ``run_dir/test_probs.csv`` (``id, prob_dog`` and one column per fold) and a JSON note
    of what produced it, so a later ensemble with the same test set and TTA costs no model time.

    Args:
        run_dir: the run folder.
        test_csv: ``id,path`` table of the test images (``data/test.csv``).
        tta: ``none`` or ``hflip`` (mean of the photo and its mirror, in probability space).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per batch (default: twice the training batch size).
        workers: loader processes (default: chosen from the machine).
        progress: show progress bars (cache build).
        reuse: return the saved predictions when the test set, TTA and folds are unchanged.
    """
    from pipeline.catalog import read_test

    if tta not in TTA_CHOICES:
        raise ConfigError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}.")
    run_dir, test_csv = Path(run_dir), Path(test_csv)
    test = read_test(test_csv)
    ckpts = fold_checkpoints(run_dir)
    note = {"tta": tta, "test_csv": str(test_csv), "test_sha256": _file_digest(test_csv),
            "checkpoints": [str(c.relative_to(run_dir)) for c in ckpts],
            "checkpoint_mtimes": [c.stat().st_mtime_ns for c in ckpts]}
    out_csv, note_json = run_dir / "test_probs.csv", run_dir / "test_probs.json"
    if reuse and out_csv.exists() and note_json.exists() and json.loads(note_json.read_text()) == note:
        _logger.info("%s: reusing %s", run_dir.name, out_csv)
        return pd.read_csv(out_csv)

    cfg = load_config(run_dir)
    dev = resolve_device(device)
    dtype = resolve_precision("auto" if cfg.precision == "auto" or dev.type != "cuda" else cfg.precision, dev)
    base = base_size_for(cfg.img_size)
    cache = open_cache(cfg.data_dir, test.path, base, enabled=cfg.cache, progress=progress)
    dataset = ImageDataset(test.path, None, base, build_eval_transform(cfg.img_size), cache)
    loader = make_loader(dataset, batch_size or cfg.batch_size * 2, shuffle=False, seed=0,
                         workers=workers if workers is not None else default_workers(dev), device=dev)
    result = test[["id"]].copy()
    for ckpt in ckpts:
        model = build_model(cfg.arch, cfg.img_size)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
        conv = cfg.channels_last and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        model = model.to(dev, memory_format=torch.channels_last if conv else torch.contiguous_format)
        probs, rows, _ = evaluate(Step(model, dev, dtype), loader, BatchNormalizer(*normalization(model), dev, conv),
                                  hflip=tta == "hflip")
        result.loc[result.index[rows], ckpt.parent.name] = probs
    fold_cols = [c.parent.name for c in ckpts]
    result.insert(1, "prob_dog", result[fold_cols].mean(axis=1))
    write_csv(out_csv, result)
    write_json(note_json, note)
    return result


# ---- ensembling runs -------------------------------------------------------------------------
@dataclass
class Blend:
    """Blend weights per run, and the OOF scores of each run and of the blend."""

    runs: list[str]
    weights: list[float]
    method: str
    run_scores: dict[str, dict]
    blend_score: dict


def load_oof(run_dir: Path) -> pd.DataFrame:
    """A run's ``oof.csv`` (path,label,fold,prob_dog)."""
    path = Path(run_dir) / "oof.csv"
    if not path.exists():
        raise ConfigError(f"Run {run_dir} has no oof.csv; finish its training first.")
    return pd.read_csv(path)


def aligned_oof(run_dirs: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and an (images x runs) matrix of OOF probabilities; refuses runs trained on other folds."""
    oofs = [load_oof(r).sort_values("path", kind="stable").reset_index(drop=True) for r in run_dirs]
    ref = oofs[0]
    for run, oof in zip(run_dirs[1:], oofs[1:]):
        if len(oof) != len(ref) or not (oof.path.equals(ref.path) and oof.fold.equals(ref.fold)):
            raise ConfigError(f"Runs {run_dirs[0].name} and {run.name} were not trained on the same folds "
                              "(or not on the same folds' images); blend only runs made from one folds.csv.")
    return ref.label.to_numpy(), np.column_stack([o.prob_dog.to_numpy() for o in oofs])


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


def blend_runs(run_dirs: list[Path], method: str = "fit") -> Blend:
    """Weights for ``run_dirs``: ``mean`` (equal) or ``fit`` (see :func:`fit_weights`)."""
    if method not in ("mean", "fit"):
        raise ConfigError(f"--ensemble must be 'mean' or 'fit', got {method!r}.")
    labels, probs = aligned_oof(run_dirs)
    weights = fit_weights(labels, probs) if method == "fit" else np.full(len(run_dirs), 1 / len(run_dirs))
    return Blend(runs=[r.name for r in run_dirs], weights=[float(w) for w in weights], method=method,
                 run_scores={r.name: score(labels, probs[:, i]) for i, r in enumerate(run_dirs)},
                 blend_score=score(labels, probs @ weights))


def blend_predictions(preds: list[pd.DataFrame], weights: list[float]) -> pd.DataFrame:
    """Weighted mean of several runs' ``id, prob_dog`` tables (same ids required)."""
    ids = preds[0].id.sort_values().to_numpy()
    for p in preds[1:]:
        if not np.array_equal(p.id.sort_values().to_numpy(), ids):
            raise DataError("The runs' test predictions cover different ids; predict them on one test.csv.")
    table = np.column_stack([p.set_index("id").loc[ids, "prob_dog"].to_numpy() for p in preds])
    return pd.DataFrame({"id": ids, "prob_dog": table @ np.asarray(weights)})
