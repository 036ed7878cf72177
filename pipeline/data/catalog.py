"""Scan extracted folders into the catalogue: data/train.csv, data/test.csv and a report of bad files.

Every image is verified by decoding it; unreadable files are reported and left out of training. Which files
are training images, and their labels, and which are test images, and their ids, is the competition's
layout (:mod:`pipeline.data.labelling`); for cats versus dogs, labels come from the file-name prefix
(``cat.12.jpg``, ``dog_7.jpg``) or a class folder (``cats/``, ``Dog/``), and unlabelled files with a numeric
name (``123.jpg``) are test images. An unreadable test image is reported too but stays in test.csv with
``readable`` False: the competition expects a row for every test id, so it gets a neutral prediction.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import pandas as pd
from PIL import Image, ImageFile

from pipeline.competitions.spec import Competition, load_competition
from pipeline.data.labelling import Labeller
from pipeline.errors import DataError
from pipeline.fileio import write_csv
from pipeline.progress import track
from pipeline.targets.base import LabelSet

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEST_ID = re.compile(r"[0-9]+")  # a test photo is named by its id: 12.jpg (ids are written without signs)
_VERIFY_COLUMNS = ["path", "size", "mtime_ns", "ok", "width", "height", "mode", "phash", "error"]
TEST_COLUMNS = ["id", "path", "width", "height", "readable"]

# A truncated JPEG must fail, not be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class Catalog:
    """What the catalogue stage found. ``train``: path,label,width,height,phash; ``test``: id,path,width,
    height,readable (every test id, readable or not)."""

    train: pd.DataFrame
    test: pd.DataFrame
    problems: pd.DataFrame  # path, reason (corrupt images, unlabelled files; unreadable test images, kept)
    skipped: int  # non-image files (Thumbs.db, .DS_Store, ...)
    classes: tuple[str, ...] = ("cat", "dog")  # label i is classes[i]
    no_test: str = ""  # why not one test image was found (empty when some were)


def label_from_path(path: Path) -> int | None:
    """1 for dog, 0 for cat, None when neither the file name nor a parent folder says (the cats-versus-dogs rule).

    Args:
        path: an image path such as ``train/cat.12.jpg`` or ``PetImages/Dog/7.jpg``.
    """
    global _CATS_DOGS
    if _CATS_DOGS is None:
        _CATS_DOGS = Labeller(load_competition("course"), [])
    label = _CATS_DOGS.train_label(Path(path))
    return label if isinstance(label, int) else None


_CATS_DOGS: Labeller | None = None


def id_from_name(path: str | Path) -> int | None:
    """The test id a file's name gives (``12.jpg``, ``test/0012.png`` -> 12); None when its stem is not a number.

    Args:
        path: a file name or path.
    """
    stem = Path(path).stem
    return int(stem) if TEST_ID.fullmatch(stem) else None


def verify_image(path: str) -> dict:
    """Decode ``path`` completely; return size, mode and perceptual hash, or the error."""
    row = {"path": path, "ok": False, "width": 0, "height": 0, "mode": "", "phash": "", "error": ""}
    try:
        with Image.open(path) as img:
            row.update(width=img.width, height=img.height, mode=img.mode)
            img.draft("RGB", (64, 64))  # JPEG: decode at reduced scale; every byte is still read
            img.load()
            row["phash"] = str(imagehash.phash(img.convert("RGB")))
            row["ok"] = True
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _list_files(roots: Iterable[Path]) -> tuple[list[Path], int]:
    images, skipped = [], 0
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise DataError(f"Folder {root} does not exist; run `pipeline download` first.")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(("__MACOSX", ".")))
            for name in sorted(filenames):
                p = Path(dirpath, name)
                if p.suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("._"):
                    images.append(p.resolve())
                elif not name.startswith(".extracted"):
                    skipped += 1
    return images, skipped


def _verify_all(paths: list[Path], cache_csv: Path | None, workers: int, progress: bool) -> pd.DataFrame:
    """Verify every path, reusing earlier results for files whose size and mtime are unchanged."""
    stats = {str(p): p.stat() for p in paths}
    known = {}
    if cache_csv is not None and cache_csv.exists():
        old = pd.read_csv(cache_csv, dtype={"phash": str, "error": str, "mode": str}, keep_default_na=False)
        known = {r.path: r._asdict() for r in old.itertuples(index=False)}
    rows, todo = [], []
    for path, st in stats.items():
        k = known.get(path)
        if k is not None and int(k["size"]) == st.st_size and int(k["mtime_ns"]) == st.st_mtime_ns:
            rows.append(k)
        else:
            todo.append(path)
    if todo:
        if workers > 1 and len(todo) > 64:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(verify_image, todo, chunksize=32)
                fresh = list(track(results, total=len(todo), description="verify images", enabled=progress))
        else:
            fresh = list(track(map(verify_image, todo), total=len(todo), description="verify images", enabled=progress))
        for r in fresh:
            r["size"], r["mtime_ns"] = stats[r["path"]].st_size, stats[r["path"]].st_mtime_ns
        rows.extend(fresh)
    df = pd.DataFrame(rows, columns=_VERIFY_COLUMNS)
    df["ok"] = df["ok"].astype(str).str.lower().isin(["true", "1"])
    df = df.sort_values("path", kind="stable").reset_index(drop=True)
    if cache_csv is not None:
        write_csv(cache_csv, df)
    return df


def scan(roots: Iterable[Path], *, competition: Competition | None = None, cache_csv: Path | None = None,
         workers: int | None = None, progress: bool = False) -> Catalog:
    """Find, verify and label every image under ``roots``.

    Args:
        roots: folders to scan recursively.
        competition: whose layout labels the images (default: the course competition, cats versus dogs).
        cache_csv: where verification results are kept so a second run re-decodes only changed files.
        workers: decoding processes (default: all cores).
        progress: show a progress bar.
    """
    roots = list(roots)
    paths, skipped = _list_files(roots)
    if not paths:
        raise DataError(f"No images found under {', '.join(str(r) for r in roots)}; check the download.")
    comp = competition or load_competition("course")
    labeller = Labeller(comp, roots, paths)
    verified = _verify_all(paths, cache_csv, workers or os.cpu_count() or 1, progress)
    train, test, problems = [], [], []
    for r in verified.itertuples(index=False):
        p = Path(r.path)
        label = labeller.train_label(p)
        tid = labeller.test_id(p) if label is None else None
        if isinstance(label, str) and not isinstance(label, LabelSet):  # a training image without a usable label
            problems.append({"path": r.path, "reason": f"label unknown: {label}"})
        elif tid is not None and not r.ok:
            test.append({"id": tid, "path": r.path, "width": 0, "height": 0, "readable": False})
            problems.append({"path": r.path, "reason": f"unreadable test image ({r.error}): kept in test.csv with "
                             f"readable=False so the submission still lists id {tid}; it will get a "
                             "neutral prediction"})
        elif not r.ok:
            problems.append({"path": r.path, "reason": f"unreadable image ({r.error})"})
        elif label is not None:
            train.append({"path": r.path, "label": label, "width": r.width, "height": r.height, "phash": r.phash})
        elif tid is not None:
            test.append({"id": tid, "path": r.path, "width": r.width, "height": r.height, "readable": True})
        else:
            problems.append({"path": r.path, "reason": labeller.unlabelled()})
    train_df = pd.DataFrame(train, columns=["path", "label", "width", "height", "phash"])
    test_df = pd.DataFrame(test, columns=TEST_COLUMNS).sort_values("id", kind="stable")
    dup = test_df["id"][test_df["id"].duplicated()]
    if len(dup):
        clash = test_df[test_df["id"].isin(dup)]["path"].tolist()[:4]
        raise DataError(f"Test id {dup.iloc[0]} appears more than once ({', '.join(clash)}): the competition's "
                        f"test.id = {comp.test.id!r} does not tell these test images apart; catalogue one test "
                        "folder at a time, or choose another test.id in the spec.")
    no_test = labeller.why_no_test(train_df.path) if test_df.empty else ""
    return Catalog(train_df, test_df.reset_index(drop=True),
                   pd.DataFrame(problems, columns=["path", "reason"]), skipped, labeller.classes, no_test)


def write_catalog(catalog: Catalog, data_dir: Path) -> dict[str, Path]:
    """Write train.csv, test.csv and catalog_problems.csv into ``data_dir``; return their paths."""
    data_dir = Path(data_dir)
    out = {
        "train": write_csv(data_dir / "train.csv", catalog.train),
        "test": write_csv(data_dir / "test.csv", catalog.test),
        "problems": write_problems(catalog, data_dir),
    }
    return out


def write_problems(catalog: Catalog, data_dir: Path) -> Path:
    """Write only catalog_problems.csv (path, reason) into ``data_dir``; return its path."""
    return write_csv(Path(data_dir) / "catalog_problems.csv", catalog.problems)


def read_train(data_dir: Path) -> pd.DataFrame:
    """Load data/train.csv, with a clear error when it is missing or malformed."""
    return _read(Path(data_dir) / "train.csv", ["path", "label"])


def read_test(data_dir_or_csv: Path) -> pd.DataFrame:
    """Load data/test.csv (or the CSV given), with a clear error when it is missing or malformed.

    Every test id is returned, with a boolean ``readable`` column (False: the photo could not be
    decoded; predict it as 0.5). A catalogue written before that column existed reads as all readable.

    Args:
        data_dir_or_csv: the data folder, or the test catalogue itself.
    """
    p = Path(data_dir_or_csv)
    df = _read(p / "test.csv" if p.is_dir() else p, ["id", "path"], ids_as_text=True)
    df["id"] = parse_ids(df["id"])
    if "readable" not in df.columns:
        df["readable"] = True
    else:
        df["readable"] = df["readable"].astype(str).str.strip().str.lower().isin(["true", "1"])
    return df


def parse_ids(ids: pd.Series) -> pd.Series:
    """Test ids as integers when every one is written as one (``12``, no sign, no leading zero), else as text: file
    names and hex ids stay text, even one that happens to be all digits (``0123``)."""
    text = ids.astype(str)
    if len(text) and text.str.fullmatch(r"0|[1-9][0-9]*").all():
        return text.astype("int64")
    return text


def _read(csv: Path, columns: list[str], ids_as_text: bool = False) -> pd.DataFrame:
    if not csv.exists():
        raise DataError(f"{csv} does not exist; run `pipeline download` first.")
    df = pd.read_csv(csv, dtype={"phash": str} | ({"id": str} if ids_as_text else {}), keep_default_na=not ids_as_text)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{csv} lacks column(s) {', '.join(missing)}; rebuild it with `pipeline download`.")
    return df
