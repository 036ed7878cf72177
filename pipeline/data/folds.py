"""Stratified, grouped k-fold assignment: near-duplicate photos never straddle a split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.data.catalog import read_train
from pipeline.errors import DataError
from pipeline.fileio import write_csv

_logger = logging.getLogger(__name__)


def duplicate_groups(phashes: list[str], threshold: int = 4, chunk: int = 1024) -> np.ndarray:
    """Group images whose 64-bit perceptual hashes differ in at most ``threshold`` bits.

    Args:
        phashes: hex strings from ``imagehash.phash`` (16 hex digits each).
        threshold: the largest Hamming distance still counted as a duplicate (0 = identical hash).
        chunk: rows compared at once (bounds memory at ``chunk * len(phashes)`` words).

    Returns:
        One group id per image; images in one connected cluster of near-duplicates share it.
    """
    n = len(phashes)
    try:
        h = np.array([int(x, 16) for x in phashes], dtype=np.uint64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"train.csv holds a malformed perceptual hash ({exc}); rebuild it with "
                        "`pipeline download`.") from None
    rows, cols = [], []
    for start in range(0, n, chunk):
        block = h[start:start + chunk, None] ^ h[None, :]
        i, j = np.nonzero(np.bitwise_count(block) <= threshold)
        i = i + start
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    i, j = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def assign_folds(train: pd.DataFrame, n_folds: int = 5, seed: int = 0, dup_threshold: int = 4) -> pd.DataFrame:
    """Return ``path,label,fold,group``: stratified by label, grouped by near-duplicate cluster.

    Args:
        train: the catalogue (``path``, ``label``, ``phash``).
        n_folds: number of folds K (at least 2).
        seed: shuffling seed; the same seed gives the same folds.
        dup_threshold: Hamming distance under which two photos count as the same (-1 turns grouping off).
    """
    if n_folds < 2:
        raise DataError(f"--folds must be at least 2, got {n_folds}.")
    counts = train["label"].value_counts()
    if len(counts) < 2 or counts.min() < n_folds:
        raise DataError(f"{n_folds} folds need at least {n_folds} cats and {n_folds} dogs; the catalogue has "
                        f"{int(counts.get(0, 0))} cats and {int(counts.get(1, 0))} dogs.")
    if dup_threshold >= 0:
        groups = duplicate_groups(train["phash"].astype(str).tolist(), dup_threshold)
    else:
        groups = np.arange(len(train))
    folds = np.full(len(train), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(train)), train["label"], groups)):
        folds[val_idx] = k
    out = train[["path", "label"]].copy()
    out["fold"] = folds
    out["group"] = groups
    return out


def duplicate_report(folds: pd.DataFrame) -> pd.DataFrame:
    """Groups with more than one photo: ``group, size, labels`` (mixed labels hint at label noise)."""
    g = folds.groupby("group")
    sizes = g.size()
    multi = sizes[sizes > 1].index
    rows = [{"group": int(k), "size": int(sizes[k]),
             "labels": ",".join(str(v) for v in sorted(folds.loc[g.groups[k], "label"].unique())),
             "paths": ";".join(folds.loc[g.groups[k], "path"])} for k in multi]
    return pd.DataFrame(rows, columns=["group", "size", "labels", "paths"])


def write_folds(data_dir: Path, n_folds: int = 5, seed: int = 0, dup_threshold: int = 4) -> pd.DataFrame:
    """Read data/train.csv, assign folds and write data/folds.csv (and data/duplicates.csv)."""
    data_dir = Path(data_dir)
    folds = assign_folds(read_train(data_dir), n_folds, seed, dup_threshold)
    write_csv(data_dir / "folds.csv", folds)
    write_csv(data_dir / "duplicates.csv", duplicate_report(folds))
    return folds


def read_folds(data_dir: Path) -> pd.DataFrame:
    """Load data/folds.csv with a clear error when it is missing."""
    csv = Path(data_dir) / "folds.csv"
    if not csv.exists():
        raise DataError(f"{csv} does not exist; run `pipeline download` (or `pipeline split`) first.")
    df = pd.read_csv(csv)
    if not {"path", "label", "fold"} <= set(df.columns):
        raise DataError(f"{csv} lacks path/label/fold columns; rebuild it with `pipeline split`.")
    return df
