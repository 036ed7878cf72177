"""Stratified, grouped k-fold assignment: near-duplicate photos, and a group's images (a patient's), never straddle
a split; stratified as the target kind reads (iterative-stratification's MultilabelStratifiedKFold for multilabel,
binned values for regression)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
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
                 classes: tuple[str, ...] = ("cat", "dog"), kind: str = "single") -> pd.DataFrame:
    """Return ``path,label,fold,group,duplicate``: stratified by the target, grouped by near-duplicate cluster and by
    the catalogue's ``group`` column (the spec's target.group: a patient's images) together.

    ``group`` is what stays in one fold (near-duplicates and a group's images, joined: two patients sharing a
    near-duplicate photo are one group); ``duplicate`` the near-duplicate cluster alone. Stratified by the label for
    single, ordinal and topk targets (topk: identities with fewer images than folds share one stratum), by the
    target's quantile bin for regression, and for multilabel by iterative stratification
    (``MultilabelStratifiedKFold``) over the groups, a group carrying every label one of its images has (group
    sizes are not weighed: a fold's image count varies with the groups it gets).

    On small, plain images (digit scans, 32 px tiles) perceptual hashes collide widely and near-duplicate
    groups swallow a data set; when the largest group holds more than MAX_GROUP_SHARE of the photos the
    threshold is lowered until none does (or grouping is turned off), and ``folds.attrs["grouping"]`` says so.

    Args:
        train: the catalogue (``path``, ``label``, ``phash``, optional ``group``).
        n_folds: number of folds K (at least 2).
        seed: shuffling seed; the same seed gives the same folds.
        dup_threshold: Hamming distance under which two photos count as the same (-1 turns grouping off).
        classes: the class names (label i is classes[i]), for the messages.
        kind: the target kind (Target.kind): how the label column reads.
    """
    if n_folds < 2:
        raise DataError(f"--folds must be at least 2, got {n_folds}.")
    if kind in ("single", "ordinal"):
        counts = train["label"].value_counts()
        few = [i for i in range(len(classes)) if counts.get(i, 0) < n_folds]
        if few:
            raise DataError(_too_few(classes, counts, few, n_folds))
    duplicates, note = _groups(train, dup_threshold)
    groups = _join(duplicates, train["group"] if "group" in train.columns else None)
    if groups.max(initial=-1) + 1 < n_folds:
        raise DataError(f"{n_folds} folds need at least {n_folds} groups of images (a group stays in one fold); the "
                        f"catalogue has {groups.max(initial=-1) + 1} ({len(train)} images): give more images, or fewer "
                        "--folds.")
    folds = _split(kind, train["label"], groups, n_folds, seed, len(classes))
    out = train[["path", "label"]].copy()
    out["fold"] = folds
    out["group"] = groups
    out["duplicate"] = duplicates
    out.attrs["grouping"] = note
    one_fold = out.groupby("label").fold.nunique() if kind in ("single", "ordinal") else pd.Series(dtype=int)
    for label in one_fold.index[one_fold == 1]:
        name = classes[label] if 0 <= label < len(classes) else str(label)
        _logger.warning("every photo of class %r is in fold %d (near-duplicates are kept together): that fold's model "
                        "never sees the class, and the other folds never score it; give more distinct photos of it, "
                        "or a lower --dup-threshold", name, out.fold[out.label == label].iloc[0])
    return out


def _join(duplicates: np.ndarray, group: pd.Series | None) -> np.ndarray:
    """The fold groups: near-duplicate clusters and the catalogue's groups joined (connected), numbered 0..G-1. An
    empty group value is a group of its own."""
    if group is None:
        return duplicates
    text = group.fillna("").astype(str).to_numpy()
    codes = pd.factorize(text)[0]
    empty = text == ""
    codes[empty] = codes.max(initial=-1) + 1 + np.arange(empty.sum())
    n, d = len(duplicates), duplicates.max(initial=-1) + 1
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([n + duplicates, n + d + codes])
    size = n + d + codes.max(initial=-1) + 1
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    return pd.factorize(connected_components(graph, directed=False)[1][:n])[0]


def _split(kind: str, labels: pd.Series, groups: np.ndarray, n_folds: int, seed: int, n_classes: int) -> np.ndarray:
    """The fold of every image, stratified as the target kind reads (see assign_folds)."""
    folds = np.full(len(labels), -1, dtype=int)
    if kind == "multilabel":
        sets = label_sets(labels)
        owned = np.zeros((groups.max() + 1, max(n_classes, 1)), dtype=int)
        for g, s in zip(groups, sets, strict=True):
            owned[g, s] = 1
        splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, val_groups) in enumerate(splitter.split(np.zeros(len(owned)), owned)):
            folds[np.isin(groups, val_groups)] = k
        return folds
    if kind == "regression":
        values = pd.to_numeric(labels, errors="coerce")
        bins = min(10, max(2, len(labels) // (2 * n_folds)))
        strata = pd.qcut(values.rank(method="first"), q=bins, labels=False).to_numpy()
    elif kind == "topk":  # identities with fewer images than folds (most whales) share one stratum
        counts = labels.map(labels.value_counts())
        strata = np.where(counts >= n_folds, labels, -1)
    else:
        strata = labels.to_numpy()
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(labels)), strata, groups)):
        folds[val_idx] = k
    return folds


def label_sets(labels: pd.Series) -> list[list[int]]:
    """A multilabel catalogue's labels as lists of indices ("0 2" -> [0, 2]; "" or empty -> []), however a CSV
    reader typed the column (a lone "3" read as 3 or 3.0)."""
    def one(value) -> list[int]:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return []
        return [int(float(v)) for v in str(value).split()]

    return [one(v) for v in labels]


def class_counts(train: pd.DataFrame, classes: tuple[str, ...], kind: str = "single") -> dict[str, int]:
    """Images per class (multilabel: images carrying each label; regression: every image under the target's name)."""
    if kind == "regression":
        return {classes[0]: len(train)}
    if kind == "multilabel":
        counts = np.bincount([i for s in label_sets(train["label"]) for i in s], minlength=len(classes))
        return {c: int(counts[i]) for i, c in enumerate(classes)}
    counts = train["label"].value_counts()
    return {c: int(counts.get(i, 0)) for i, c in enumerate(classes)}


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
    """Near-duplicate clusters with more than one photo: ``group, size, labels`` (mixed labels hint at label
    noise)."""
    g = folds.groupby("duplicate" if "duplicate" in folds.columns else "group")
    sizes = g.size()
    multi = sizes[sizes > 1].index
    rows = [{"group": int(k), "size": int(sizes[k]),
             "labels": ",".join(str(v) for v in sorted(folds.loc[g.groups[k], "label"].unique())),
             "paths": ";".join(folds.loc[g.groups[k], "path"])} for k in multi]
    return pd.DataFrame(rows, columns=["group", "size", "labels", "paths"])


def write_folds(data_dir: Path, n_folds: int = 5, seed: int = 0, dup_threshold: int = 4) -> pd.DataFrame:
    """Read data/train.csv, assign folds and write data/folds.csv (and data/duplicates.csv)."""
    data_dir = Path(data_dir)
    comp = data_competition(data_dir)
    folds = assign_folds(read_train(data_dir), n_folds, seed, dup_threshold, comp.classes, comp.target.kind)
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
