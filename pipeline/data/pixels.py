"""Images that live inside a pixel CSV (Digit Recognizer), written out as PNG files once.

Pixel CSVs are written out because every later stage works on files: the verification, the perceptual hashes,
the decoded-image cache and the report's gallery. 70,000 28x28 PNGs take about 25 MB and are written once (a
marker beside them says from which CSVs); the CSV stays where it was.

The PNGs of one pair of CSVs are written into a folder of their own, which a later download from a smaller or
changed CSV never mixes with its own; the earlier folders are removed once the new catalogue is written (a refused
download leaves the earlier catalogue and its images as they were). A training row
with empty cells (or an empty label) is left out and listed in catalog_problems.csv; a test row with empty cells
is written as an unreadable image, so its id is still submitted (with a neutral prediction). A file whose pixels
all lie in 0-1 is taken as scaled to 0-1 and multiplied by 255 (and said). A label is a folder name: one that is
not a plain name (``../x``, ``a/b``, ``..``) is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.competitions.spec import Competition
from pipeline.data.labelling import nfc
from pipeline.errors import DataError
from pipeline.fileio import write_json
from pipeline.progress import track

_logger = logging.getLogger(__name__)

MARKER = ".written.json"


@dataclass
class PixelImages:
    """What :func:`pixel_images` wrote: the folder to catalogue, rows left out (``path``, ``reason``) and notes
    to show (a 0-1 scale converted)."""

    roots: list[Path]
    problems: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pixel_images(comp: Competition, roots: list[Path], out_root: Path, progress: bool = False) -> PixelImages:
    """Write the images of a pixel CSV competition (Digit Recognizer) as PNG files, once.

    The PNGs go to a folder of ``out_root`` named by the CSVs' sizes and times (so a catalogue written from earlier
    CSVs keeps pointing at its own images until :func:`drop_other_images` removes them): training images to
    ``train/<class>/<row>.png`` (labelled by their class folder), test images to ``test/<row>.png`` (their id: the
    CSV row, from 1). A second download from the same files writes nothing.
    """
    t = comp.train
    csvs = {}
    for name in (t.csv, comp.test.csv):
        found = [p for r in roots for p in ([r] if r.name == name and r.is_file() else Path(r).rglob(name))
                 if p.is_file()]
        if not found:
            raise DataError(f"Competition {comp.name} keeps its images in {name}, which is not in the download "
                            f"({', '.join(str(r) for r in roots)}): pass it (--from FILE).")
        csvs[name] = found[0]
    sources = {n: [p.stat().st_size, p.stat().st_mtime_ns] for n, p in csvs.items()}
    out_dir = out_root / hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:12]
    done = out_dir / MARKER
    if done.exists():
        saved = json.loads(done.read_text())
        return PixelImages([out_dir], saved.get("problems", []), saved.get("notes", []))
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    written = PixelImages([out_dir])
    try:
        for name, part in ((t.csv, "train"), (comp.test.csv, "test")):
            _write_part(comp, csvs[name], part, staging / part, written, progress)
        write_json(staging / MARKER, {"csvs": sources, "problems": written.problems, "notes": written.notes})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return written


def drop_other_images(images: PixelImages) -> None:
    """Remove the PNGs written from other (earlier) CSVs, once the catalogue points at ``images`` alone."""
    for folder in images.roots:
        for other in folder.parent.iterdir():
            if other != folder and other.is_dir():
                shutil.rmtree(other)


def _write_part(comp: Competition, csv: Path, part: str, folder: Path, written: PixelImages, progress: bool) -> None:
    """Write one pixel CSV's rows as PNGs under ``folder`` (training rows in their class folders)."""
    t = comp.train
    try:
        frame = pd.read_csv(csv, dtype={t.label_column: str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv} is empty: pass the competition's {csv.name} with its header and rows.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv} cannot be read as a CSV ({exc}).") from None
    labels = None
    if part == "train":
        if t.label_column not in frame:
            raise DataError(f"{csv} has no column {t.label_column!r}: the competition's labels.")
        labels = frame.pop(t.label_column)
    if frame.empty:
        raise DataError(f"{csv} holds no rows: pass the competition's {csv.name} with its images.")
    if frame.shape[1] != t.side * t.side:
        raise DataError(f"{csv} has {frame.shape[1]} pixel columns, not {t.side}x{t.side}: the spec's train.side "
                        "does not fit the file.")
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        values = pd.to_numeric(frame[text[0]], errors="coerce")
        row = int(np.flatnonzero(values.isna() & frame[text[0]].notna())[0])
        raise DataError(f"{csv} row {row + 1}, column {text[0]!r} holds {frame[text[0]].iloc[row]!r}, which is not a "
                        "pixel value (a number from 0 to 255): fix the file.")
    pixels = frame.to_numpy(dtype=np.float64)
    empty = np.isnan(pixels).any(axis=1) | (labels.isna().to_numpy() if labels is not None else False)
    finite = pixels[~empty]
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        pixels = pixels * 255
        written.notes.append(f"{csv} holds pixel values from 0 to 1, not 0 to 255: multiplied them by 255.")
    if labels is not None:
        labels = labels.fillna("").map(nfc)
        _check_labels(csv, labels[~empty])
    rows = track(range(len(frame)), total=len(frame), description=f"write {csv.name} as PNG", enabled=progress)
    for i in rows:
        out = (folder / labels.iloc[i] if labels is not None else folder) / f"{i + 1}.png"
        if empty[i]:
            if labels is not None:  # a training row: left out
                written.problems.append({"path": str(csv), "reason": f"row {i + 1} has empty cells (or no label): "
                                                                       "left out of training"})
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"")  # unreadable: catalogued with readable=False, so its id still gets a prediction
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        img = np.clip(np.round(pixels[i]), 0, 255).astype(np.uint8).reshape(t.side, t.side)
        Image.fromarray(img, mode="L").save(out)


def _check_labels(csv: Path, labels: pd.Series) -> None:
    """DataError for a label that cannot be a class folder's name (the PNGs are written into one per class)."""
    bad = labels[labels.isin(["", ".", ".."]) | labels.str.contains(r"[/\\\0]")
                 | labels.map(lambda s: len(s.encode()) > 255)]
    if len(bad):
        raise DataError(f"{csv} row {bad.index[0] + 1} has the label {bad.iloc[0]!r}, which cannot name a class "
                        "folder (it is empty, '.' or '..', or holds '/', '\\' or over 255 bytes): fix the labels.")


def resolve_pixels(comp: Competition) -> Competition:
    """A pixel competition as its written PNGs are labelled: by class folder, test ids from their names."""
    return dataclasses.replace(comp, train=dataclasses.replace(comp.train, labels="folder", images="train/*/*.png"),
                               test=dataclasses.replace(comp.test, images="test/*.png"))
