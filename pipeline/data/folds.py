"""Stratified, grouped k-fold assignment: near-duplicate photos never straddle a split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.competitions import data_competition
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


# a duplicate group larger than this share of the photos (and than MAX_GROUP_FLOOR) is no duplicate, it is a look
# that many plain images share: digit scans, 32 px tiles
MAX_GROUP_SHARE = 0.05
MAX_GROUP_FLOOR = 10


def assign_folds(train: pd.DataFrame, n_folds: int = 5, seed: int = 0, dup_threshold: int = 4,
                 classes: tuple[str, ...] = ("cat", "dog")) -> pd.DataFrame:
    """Return ``path,label,fold,group``: stratified by label, grouped by near-duplicate cluster.

    On small, plain images (digit scans, 32 px tiles) perceptual hashes collide widely and near-duplicate
    groups swallow a data set; when the largest group holds more than MAX_GROUP_SHARE of the photos the
    threshold is lowered until none does (or grouping is turned off), and ``folds.attrs["grouping"]`` says so.

    Args:
        train: the catalogue (``path``, ``label``, ``phash``).
        n_folds: number of folds K (at least 2).
        seed: shuffling seed; the same seed gives the same folds.
        dup_threshold: Hamming distance under which two photos count as the same (-1 turns grouping off).
        classes: the class names (label i is classes[i]), for the messages.
    """
    if n_folds < 2:
        raise DataError(f"--folds must be at least 2, got {n_folds}.")
    counts = train["label"].value_counts()
    few = [i for i in range(len(classes)) if counts.get(i, 0) < n_folds]
    if few:
        raise DataError(_too_few(classes, counts, few, n_folds))
    groups, note = _groups(train, dup_threshold)
    folds = np.full(len(train), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(train)), train["label"], groups)):
        folds[val_idx] = k
    out = train[["path", "label"]].copy()
    out["fold"] = folds
    out["group"] = groups
    out.attrs["grouping"] = note
    one_fold = out.groupby("label").fold.nunique()
    for label in one_fold.index[one_fold == 1]:
        name = classes[label] if 0 <= label < len(classes) else str(label)
        _logger.warning("every photo of class %r is in fold %d (near-duplicates are kept together): that fold's model "
                        "never sees the class, and the other folds never score it; give more distinct photos of it, "
                        "or a lower --dup-threshold", name, out.fold[out.label == label].iloc[0])
    return out


def _too_few(classes: tuple[str, ...], counts: pd.Series, few: list[int], n_folds: int) -> str:
    if len(classes) == 2:
        a, b = classes
        return (f"{n_folds} folds need at least {n_folds} {a}s and {n_folds} {b}s; the catalogue has "
                f"{int(counts.get(0, 0))} {a}s and {int(counts.get(1, 0))} {b}s.")
    listing = ", ".join(f"{classes[i]!r} ({int(counts.get(i, 0))})" for i in few[:5]) + (" ..." if len(few) > 5 else "")
    return (f"{n_folds} folds need at least {n_folds} photos of every class; {len(few)} class(es) have fewer: "
            f"{listing}. Give more photos of them, or fewer --folds.")


def _groups(train: pd.DataFrame, threshold: int) -> tuple[np.ndarray, str]:
    """Near-duplicate groups, the threshold lowered while one group is larger than MAX_GROUP_SHARE."""
    if threshold < 0:
        return np.arange(len(train)), "off"
    hashes = train["phash"].astype(str).tolist()
    for t in range(threshold, -1, -1):
        groups = duplicate_groups(hashes, t)
        largest = np.bincount(groups).max() if len(groups) else 0
        if largest <= max(MAX_GROUP_FLOOR, MAX_GROUP_SHARE * len(train)):
            note = f"threshold {t}" + (f" (lowered from {threshold}: at {threshold} one group held too many photos)"
                                       if t < threshold else "")
            return groups, note
        _logger.warning("near-duplicate threshold %d: one group holds %d of %d photos; lowering it", t, largest,
                        len(train))
    return np.arange(len(train)), (f"off: even identical perceptual hashes put more than {MAX_GROUP_SHARE:.0%} of "
                                   "the photos in one group (plain images)")


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
    folds = data_competition(data_dir).kind.fold_folds(assign_folds, read_train(data_dir), n_folds, seed, dup_threshold)
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
