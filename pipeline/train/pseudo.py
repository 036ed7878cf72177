"""Pseudo-labels (``pipeline train --pseudo FROM``): a second round of training with the test photos that an
earlier blend predicts confidently, with its probabilities as soft labels (the Redux top solutions did this).

The photos join every fold's training part and never a validation part, so the new run's out-of-fold figures
stay honest (each still covers every training photo exactly once, predicted by a model that never saw it). The
set is chosen once, when the run starts, and kept in the run as ``pseudo.csv`` (path, id and the soft labels);
config.json records where it came from, the threshold and the counts, and a resume trains on the same set.
"""

from __future__ import annotations

import json
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


def pseudo_labels(source: str | Path, runs_dir: str | Path, test_csv: str | Path, comp: Competition,
                  threshold: float = PSEUDO_THRESHOLD) -> tuple[pd.DataFrame, dict]:
    """The confidently predicted test photos of a submission's blend (or of one run), with soft labels.

    Args:
        source: a submission's JSON note (or the submission CSV beside it), which names its runs and weights; or
            a run's name or folder. Each run needs the test predictions ``pipeline predict`` saved for this test
            set (``test_probs.csv``).
        runs_dir: where run names are looked up.
        test_csv: the test catalogue the photos come from.
        comp: the competition being trained (the runs must have been trained for its classes).
        threshold: the smallest probability of the predicted class a photo needs (above 0.5, below 1).

    Returns:
        ``(frame, info)``: ``path, id`` and the probability columns of the competition (``prob_dog``, or one per
        class) for each chosen photo; ``info`` for config.json.
    """
    if not 0.5 < threshold < 1:
        raise ConfigError(f"--pseudo-threshold must be above 0.5 and below 1, got {threshold}.")
    runs, weights = _runs_of(source, runs_dir)
    test_csv = Path(test_csv)
    digest = file_digest(test_csv)
    test = read_test(test_csv)
    columns = comp.prob_columns()
    blended = np.zeros((len(test), len(columns)))
    for run, weight in zip(runs, weights, strict=True):
        own = run_competition(run.config())
        if tuple(own.classes) != tuple(comp.classes):
            raise ConfigError(f"--pseudo: run {run.name} was trained for {own.name}, not for the classes of "
                              f"{comp.name}.")
        note = json.loads(run.test_note_path.read_text()) if run.test_note_path.exists() else {}
        if not run.test_probs_path.exists() or note.get("test_sha256") != digest:
            raise ConfigError(f"--pseudo: run {run.name} has no test predictions for {test_csv}; predict them first "
                              f"(`pipeline predict --run {run.name} --test {test_csv}`).")
        from pipeline.predict.inference import read_test_probs  # ids as text, as read_test reads them

        probs = read_test_probs(run).set_index("id").reindex(test.id)
        if probs[columns].isna().any().any():
            raise ConfigError(f"--pseudo: the test predictions of run {run.name} miss some ids of {test_csv}; "
                              "predict them again.")
        blended += weight * probs[columns].to_numpy(dtype=np.float64)
    p = table_probs(pd.DataFrame(blended, columns=columns), [columns])
    confidence = np.maximum(p, 1 - p) if p.ndim == 1 else p.max(axis=1)
    keep = test.readable.to_numpy() & (confidence >= threshold)
    frame = pd.DataFrame({"path": test.path[keep].to_numpy(), "id": test.id[keep].to_numpy(),
                          **{c: blended[keep, i] for i, c in enumerate(columns)}})
    info = {"from": str(source), "runs": [r.name for r in runs], "weights": list(map(float, weights)),
            "threshold": threshold, "photos": int(keep.sum()), "of": len(test), "test_sha256": digest}
    if frame.empty:
        raise ConfigError(f"--pseudo: no test photo is predicted with {threshold} or more by {source}; lower "
                          "--pseudo-threshold.")
    return frame, info


def _runs_of(source: str | Path, runs_dir: str | Path) -> tuple[list[RunDir], list[float]]:
    """The runs and blend weights a submission's note names, or one run."""
    path = Path(source)
    note_file = path.with_suffix(".json") if path.suffix == ".csv" else path
    if note_file.suffix == ".json":
        if not note_file.is_file():
            raise ConfigError(f"--pseudo {source}: no such submission note ({note_file}); give the JSON note "
                              "`pipeline predict` wrote beside the submission, or a run.")
        try:
            note = json.loads(note_file.read_text(encoding="utf-8"))
            runs, weights = [RunDir(r) for r in note["runs"]], [float(w) for w in note["weights"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--pseudo {source}: {note_file} is not a submission note ({exc}).") from None
        missing = [r.path for r in runs if not r.exists()]
        if missing:
            raise ConfigError(f"--pseudo {source}: its run {missing[0]} is gone.")
        return runs, weights
    return [find_run(runs_dir, str(source))], [1.0]


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
