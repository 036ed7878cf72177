"""Predict the test set with every fold of a run (with test-time augmentation)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.competitions.spec import run_competition
from pipeline.compute.evaluation import Amp, evaluate
from pipeline.compute.placement import place_model
from pipeline.compute.runtime import Runtime, default_workers, resolve_device, setup_device
from pipeline.compute.settings import RunSettings
from pipeline.data.cache import cache_shortfall, open_cache
from pipeline.data.catalog import parse_ids, read_test
from pipeline.data.images import BatchNormalizer, ImageDataset, base_size_for, build_eval_transform, make_loader
from pipeline.errors import ConfigError
from pipeline.fileio import file_digest, read_id_csv, write_csv, write_json
from pipeline.models import build_model, normalization
from pipeline.progress import track
from pipeline.recipe import Recipe
from pipeline.rundir import RunDir

_logger = logging.getLogger(__name__)
NEUTRAL = 0.5  # P(positive) for a test photo that cannot be read (K classes: 1/K each): every id is scored


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


def predict_run(run_dir: Path, test_csv: Path, *, tta: str | None = None, device: str = "auto",
                batch_size: int | None = None, workers: int | None = None, progress: bool = False,
                reuse: bool = True, partial: bool = False, save: bool = True) -> pd.DataFrame:
    """Average the test-set probabilities of every fold checkpoint of a run.

    Writes ``test_probs.csv`` (``id``, the prediction columns of the run's competition: ``prob_dog`` for two
    classes, ``prob_<class>`` for each of K; then each fold's) and a JSON note of what produced it into the
    run, so a later ensemble with the same test set and TTA costs no model time (and still works after the
    checkpoints were deleted). A test photo the catalogue marked unreadable gets a neutral prediction (P = 0.5,
    or 1/K for each class), with a warning naming its id.

    Args:
        run_dir: the run folder.
        test_csv: ``id,path[,readable]`` table of the test images (``data/test.csv``).
        tta: a TTA policy (``none``, ``hflip``, ``flips``, ``rot``, ``zoom``, or views joined by ``+``): the mean
            of the photo and its views, in probability space; default: the competition's.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per batch (default: twice the training batch size).
        workers: loader processes (default: chosen from the machine).
        progress: show progress bars (cache build).
        reuse: return the saved predictions when the test set, TTA and checkpoints are unchanged.
        partial: predict with the finished folds of an unfinished run (see :func:`usable_folds`).
        save: keep the predictions in the run (False, or a run folder that cannot be written: nothing is written
            into it, as for runs read from a Kaggle dataset).
    """
    run, test_csv = RunDir(run_dir), Path(test_csv)
    comp = run_competition(run.config())
    tta = tta or comp.augment.tta
    comp.tta_views(tta)  # a ConfigError for a policy that is not one
    test = read_test(test_csv)
    folds = usable_folds(run, partial)
    ckpts = {k: run.best(k) for k in folds}
    gone = [str(c) for c in ckpts.values() if not c.exists()]
    note = {"tta": tta, "test_csv": str(test_csv), "test_sha256": file_digest(test_csv), "folds": folds,
            "checkpoint_mtimes": None if gone else [c.stat().st_mtime_ns for c in ckpts.values()]}
    saved = _saved_predictions(run, note, gone) if reuse else None
    if saved is not None:
        return saved
    if gone:
        raise ConfigError(f"Run {run.name} has lost its checkpoints ({', '.join(gone[:2])}"
                          f"{' ...' if len(gone) > 2 else ''}) and has no saved test predictions for this test set "
                          f"and --tta {tta}; train it again (`pipeline train --run-name NEW ...`).")
    columns = comp.prob_columns()
    result = test[["id"]].copy()
    readable = test[test.readable]
    if len(readable):
        probs = _predict_folds(run, comp, ckpts, readable.path, tta=tta, device=device, batch_size=batch_size,
                               workers=workers, progress=progress, cache_dir=test_csv.parent)
        for k, (rows, p) in probs.items():
            for column, values in zip(fold_columns(k, columns), p.T if p.ndim == 2 else [p], strict=True):
                result.loc[readable.index[rows], column] = values
    neutral = NEUTRAL if comp.binary or comp.target.kind != "single" else 1 / comp.n_classes
    for i, column in enumerate(columns):
        fold_cols = [fold_columns(k, columns)[i] for k in folds]
        result.insert(1 + i, column, result.reindex(columns=fold_cols).mean(axis=1).fillna(neutral))
    unreadable = test.id[~test.readable].tolist()
    if unreadable:
        _logger.warning("%d test photo(s) could not be read (ids %s); they get a neutral prediction (%.2f) so the "
                        "submission still covers every id", len(unreadable), ", ".join(map(str, unreadable[:10]))
                        + (" ..." if len(unreadable) > 10 else ""), neutral)
    if save and os.access(run.path, os.W_OK):
        write_csv(run.test_probs_path, result)
        write_json(run.test_note_path, note)
    return result


def _saved_predictions(run: RunDir, note: dict, gone: list[str]) -> pd.DataFrame | None:
    """The run's saved test predictions when they were made from the same test set, TTA and checkpoints (or the
    same test set and TTA, when the checkpoints are gone); None otherwise."""
    if not (run.test_note_path.exists() and run.test_probs_path.exists()):
        return None
    saved = json.loads(run.test_note_path.read_text())
    if saved == note:
        _logger.info("%s: reusing %s", run.name, run.test_probs_path)
        return read_test_probs(run)
    same_inputs = {k: saved.get(k) for k in ("tta", "test_sha256", "folds")} == \
        {k: note[k] for k in ("tta", "test_sha256", "folds")}
    if gone and same_inputs:
        _logger.warning("run %s: its checkpoints are gone (%s); using the test predictions saved in %s",
                        run.name, gone[0], run.test_probs_path)
        return read_test_probs(run)
    return None


def read_test_probs(run: RunDir) -> pd.DataFrame:
    """A run's saved test predictions, their ids as the test catalogue's are read (text stays text: ``NaN``)."""
    probs = read_id_csv(run.test_probs_path)
    return probs.assign(id=parse_ids(probs.id))


def fold_columns(k: int, columns: list[str]) -> list[str]:
    """A fold's columns in test_probs.csv: ``fold0`` (two classes), or ``fold0/prob_<class>`` for each class."""
    return [f"fold{k}"] if len(columns) == 1 else [f"fold{k}/{c}" for c in columns]


def _predict_folds(run: RunDir, comp, ckpts: dict[int, Path], paths: pd.Series, *, tta: str, device: str,
                   batch_size: int | None, workers: int | None, progress: bool, cache_dir: Path) -> dict:
    """``{fold: (row indices into paths, probabilities)}`` from each fold's best.pt, averaged over the TTA views
    (the decoded test photos cached in ``cache_dir``: the test catalogue's folder, never the run's data folder)."""
    recipe, settings = Recipe.of_run(run), RunSettings.of_run(run)
    dev = resolve_device(device)
    # the device setup training used (cuDNN, TF32, precision, channels_last by the GPU's capability)
    dtype, channels_last = setup_device(dev, settings.precision if dev.type == "cuda" else "auto",
                                        channels_last=settings.channels_last, deterministic=settings.deterministic)
    rt = Runtime(dev, dtype, channels_last=channels_last)
    base = base_size_for(recipe.img_size)
    full = settings.cache and cache_shortfall(cache_dir, paths, base)
    if full:
        _logger.warning(full)
    cache = open_cache(cache_dir, paths, base, enabled=settings.cache and not full, progress=progress)
    dataset = ImageDataset(paths, None, base, build_eval_transform(recipe.img_size), cache)
    loader = make_loader(dataset, recipe.batch_size * 2 if batch_size is None else batch_size, shuffle=False,
                         seed=0, workers=workers if workers is not None else default_workers(dev), runtime=rt,
                         keep_workers=True)  # every fold and TTA view in turn: one start-up
    amp, task, out = Amp(dev, dtype), comp.kind.task(), {}
    views = (None, *comp.tta_views(tta))
    for k, ckpt in track(ckpts.items(), total=len(ckpts), description=f"predict {run.name}", enabled=progress):
        model = build_model(recipe.arch, recipe.img_size, num_classes=comp.outputs)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
        placed = place_model(model, rt)
        normalize = BatchNormalizer(*normalization(model), dev, placed.channels_last)
        preds = [evaluate(placed.model, loader, normalize, amp, task=task, view=v) for v in views]
        out[k] = (preds[0].rows, np.mean([p.probs for p in preds], axis=0))
    return out
