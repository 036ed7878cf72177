"""Pseudo-labels (``pipeline train --pseudo FROM``): a second round of training with the test photos that an
earlier blend predicts confidently, with its probabilities as soft labels (the Redux top solutions did this).

The photos join a fold's training part and never a validation part. Their labels must not come from a model that
saw that fold's validation photos, or the fold's out-of-fold score is optimistic (the photos carry what those
models learnt from the fold): so when the source runs share this data's folds and saved each fold model's test
predictions, fold k trains on the photos that the source runs' fold-k models (trained without fold k) label
confidently, and ``pseudo.csv`` has a ``fold`` column. Otherwise every fold trains on the blend's labels, and
config.json's ``pseudo.leak`` (and a warning) says what the cross-validation then no longer measures.

The set is chosen once, when the run starts, and kept in the run as ``pseudo.csv`` (path, id, the soft labels and
the fold); config.json records where it came from, the threshold and the counts, and a resume trains on the same
set. The saved test predictions must be of the test set trained on and, for a submission, of the TTA it used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.choices import PSEUDO_THRESHOLD
from pipeline.competitions.spec import Competition, run_competition
from pipeline.data.catalog import read_test
from pipeline.errors import ConfigError
from pipeline.fileio import file_digest
from pipeline.metrics import table_probs
from pipeline.rundir import RunDir, find_run

_logger = logging.getLogger(__name__)


def pseudo_labels(source: str | Path, runs_dir: str | Path, test_csv: str | Path, comp: Competition,
                  threshold: float = PSEUDO_THRESHOLD, folds: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """The confidently predicted test photos of a submission's blend (or of one run), with soft labels.

    Args:
        source: a submission's JSON note (or the submission CSV beside it), which names its runs and weights; or
            a run's name or folder. Each run needs the test predictions ``pipeline predict`` saved for this test
            set (``test_probs.csv``).
        runs_dir: where run names are looked up.
        test_csv: the test catalogue the photos come from.
        comp: the competition being trained (the runs must have been trained for its classes).
        threshold: the smallest probability of the predicted class a photo needs (above 0.5, below 1).
        folds: the new run's folds (``path``, ``fold``): with them, each fold's photos are labelled by the source
            runs' models of that fold where they can be.

    Returns:
        ``(frame, info)``: ``path, id``, the probability columns of the competition (``prob_dog``, or one per
        class) and ``fold`` (the fold that trains on it; -1: every fold) for each chosen photo; ``info`` for
        config.json.
    """
    if not 0.5 < threshold < 1:
        raise ConfigError(f"--pseudo-threshold must be above 0.5 and below 1, got {threshold}.")
    runs, weights, tta = _runs_of(source, runs_dir)
    test_csv = Path(test_csv)
    digest = file_digest(test_csv)
    test = read_test(test_csv)
    columns = comp.prob_columns()
    saved = [_saved_predictions(run, test, test_csv, digest, tta, comp) for run in runs]
    n_folds = int(folds.fold.max()) + 1 if folds is not None else 0
    leak = _fold_models_unusable(runs, saved, folds, columns) if folds is not None else "no folds were given"
    info = {"from": str(source), "runs": [r.name for r in runs], "weights": list(map(float, weights)),
            "threshold": threshold, "of": len(test), "test_sha256": digest, "tta": tta}
    if leak is None:
        from pipeline.predict.inference import fold_columns

        chosen = [_confident(test, sum(w * p[fold_columns(k, columns)].to_numpy(dtype=np.float64)
                                       for w, p in zip(weights, saved, strict=True)), columns, threshold).assign(fold=k)
                  for k in range(n_folds)]
        frame = pd.concat(chosen, ignore_index=True)
        info["labelled_by"] = "each fold's own models (trained without the fold's photos)"
        info["per_fold"] = [len(c) for c in chosen]
    else:
        blended = sum(w * p[columns].to_numpy(dtype=np.float64) for w, p in zip(weights, saved, strict=True))
        frame = _confident(test, blended, columns, threshold).assign(fold=-1)
        info["leak"] = (f"{leak}, so every fold trains on labels from the blend of all folds, whose models saw the "
                        "fold's validation photos: the out-of-fold scores are optimistic, and so are the blend "
                        "weights, TTA and temperature that predict chooses on them")
        _logger.warning("--pseudo: %s", info["leak"])
    info["photos"] = len(frame)
    if frame.empty:
        raise ConfigError(f"--pseudo: no test photo is predicted with {threshold} or more by {source}; lower "
                          "--pseudo-threshold.")
    return frame, info


def _saved_predictions(run: RunDir, test: pd.DataFrame, test_csv: Path, digest: str, tta: str | None,
                       comp: Competition) -> pd.DataFrame:
    """A run's saved test predictions (test_probs.csv) in the order of ``test``, checked against what they must be."""
    own = run_competition(run.config())
    if tuple(own.classes) != tuple(comp.classes):
        raise ConfigError(f"--pseudo: run {run.name} was trained for {own.name}, not for the classes of "
                          f"{comp.name}.")
    note = json.loads(run.test_note_path.read_text()) if run.test_note_path.exists() else {}
    if not run.test_probs_path.exists() or note.get("test_sha256") != digest:
        raise ConfigError(f"--pseudo: run {run.name} has no test predictions for {test_csv}; predict them first "
                          f"(`pipeline predict --run {run.name} --test {test_csv}`).")
    if tta is not None and note.get("tta") != tta:
        raise ConfigError(f"--pseudo: run {run.name}'s saved test predictions were made with --tta {note.get('tta')}, "
                          f"not the submission's {tta}; predict them again (`pipeline predict --run {run.name} "
                          f"--test {test_csv} --tta {tta}`).")
    from pipeline.predict.inference import read_test_probs  # ids as text, as read_test reads them

    probs = read_test_probs(run).set_index("id").reindex(test.id)
    if probs[comp.prob_columns()].isna().any().any():
        raise ConfigError(f"--pseudo: the test predictions of run {run.name} miss some ids of {test_csv}; "
                          "predict them again.")
    return probs


def _fold_models_unusable(runs: list[RunDir], saved: list[pd.DataFrame], folds: pd.DataFrame,
                          columns: list[str]) -> str | None:
    """Why fold k's photos cannot be labelled by the source runs' fold-k models alone; None when they can."""
    from pipeline.predict.inference import fold_columns

    ours = folds.set_index("path").fold.sort_index()
    for run, probs in zip(runs, saved, strict=True):
        theirs = run.read_folds().set_index("path").fold.sort_index()
        if not theirs.equals(ours):
            return f"run {run.name} was trained on other folds than this data's"
        for k in range(int(ours.max()) + 1):
            cols = fold_columns(k, columns)
            if not set(cols) <= set(probs.columns) or probs[cols].isna().any().any():
                return f"run {run.name} has no saved test predictions of its fold-{k} model"
    return None


def _confident(test: pd.DataFrame, probs: np.ndarray, columns: list[str], threshold: float) -> pd.DataFrame:
    """``path, id`` and the probabilities of the readable test photos whose predicted class has ``threshold``."""
    p = table_probs(pd.DataFrame(probs, columns=columns), [columns])
    confidence = np.maximum(p, 1 - p) if p.ndim == 1 else p.max(axis=1)
    keep = test.readable.to_numpy() & (confidence >= threshold)
    return pd.DataFrame({"path": test.path[keep].to_numpy(), "id": test.id[keep].to_numpy(),
                         **{c: probs[keep, i] for i, c in enumerate(columns)}})


def of_fold(pseudo: pd.DataFrame | None, fold: int) -> pd.DataFrame | None:
    """The pseudo-labelled photos fold ``fold`` trains on: those labelled for it (or for every fold)."""
    if pseudo is None or "fold" not in pseudo:
        return pseudo
    mine = pseudo[pseudo.fold.isin([fold, -1])].reset_index(drop=True)
    return mine if len(mine) else None


def _runs_of(source: str | Path, runs_dir: str | Path) -> tuple[list[RunDir], list[float], str | None]:
    """The runs, blend weights and TTA a submission's note names (its runs found from where the note lies, not
    from the current folder), or one run (and no TTA to check)."""
    path = Path(source)
    note_file = path.with_suffix(".json") if path.suffix == ".csv" else path
    if note_file.suffix == ".json":
        if not note_file.is_file():
            raise ConfigError(f"--pseudo {source}: no such submission note ({note_file}); give the JSON note "
                              "`pipeline predict` wrote beside the submission, or a run.")
        try:
            note = json.loads(note_file.read_text(encoding="utf-8"))
            runs = [RunDir(_beside(note_file, Path(r))) for r in note["runs"]]
            weights = [float(w) for w in note["weights"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--pseudo {source}: {note_file} is not a submission note ({exc}).") from None
        missing = [r.path for r in runs if not r.exists()]
        if missing:
            raise ConfigError(f"--pseudo {source}: its run {missing[0]} is gone.")
        return runs, weights, note.get("tta")
    return [find_run(runs_dir, str(source))], [1.0], None


def _beside(note_file: Path, run: Path) -> Path:
    """A run a submission's note names: a relative path is the project's, the folder the note's predict ran in (the
    note's folder or one above it, the nearest that holds the run)."""
    if run.is_absolute():
        return run
    return next((base / run for base in [note_file.parent, *note_file.parent.parents] if (base / run).is_dir()),
                note_file.parent / run)


def soft_labels(labels: pd.Series, pseudo: pd.DataFrame | None, comp: Competition) -> np.ndarray:
    """Training targets of the real photos (``labels``: class indices) followed by the pseudo-labelled ones:
    P(positive) per photo for two classes, else (n, K) rows (one-hot for the real photos)."""
    labels = labels.to_numpy().astype(int)
    if pseudo is None:
        return labels
    soft = pseudo[comp.prob_columns()].to_numpy(dtype=np.float32)
    if comp.binary:
        return np.concatenate([labels.astype(np.float32), soft[:, 0]])
    return np.concatenate([np.eye(comp.n_classes, dtype=np.float32)[labels], soft])
