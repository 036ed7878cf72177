"""A competition's layout read off the unpacked files: which are training images and their class, which are test
images and their id (see :mod:`pipeline.competitions.spec`), and images that live inside a pixel CSV (Digit
Recognizer) written out as PNG files once.

Pixel CSVs are written out because every later stage works on files: the verification, the perceptual hashes,
the decoded-image cache and the report's gallery. 70,000 28x28 PNGs take about 25 MB and are written once (a
marker beside them says from which CSV); the CSV stays where it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.competitions.spec import Competition
from pipeline.errors import DataError
from pipeline.fileio import write_json
from pipeline.progress import track


def glob_regex(pattern: str) -> re.Pattern:
    """A regular expression for a glob over relative posix paths: ``**/`` is any folders (or none), ``*`` any
    characters but ``/``, ``?`` one of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


class Labeller:
    """Labels and ids for the files under ``roots`` as ``comp`` lays them out.

    Args:
        comp: the competition (its classes may still be missing: they are then read from the data).
        roots: the folders the download unpacked (and folders given with --from).
        files: every image file under ``roots`` (to read class folders from).
    """

    def __init__(self, comp: Competition, roots: Iterable[Path], files: Iterable[Path] = ()):
        self.comp, self.roots = comp, [Path(r).resolve() for r in roots]
        self.train_glob, self.test_glob = glob_regex(comp.train.images), glob_regex(comp.test.images)
        self.table: dict[str, str] = {}
        if comp.train.labels in ("csv", "pixels"):
            self.table = self._labels_table()
        classes = comp.classes
        if classes is None and comp.classes_from == "labels":
            classes = tuple(sorted(set(self.table.values())))
        if classes is None and comp.classes_from == "folders":
            classes = tuple(sorted({Path(f).parent.name for f in files if self._is_train(Path(f))}))
        if not classes or len(classes) < 2:
            raise DataError(f"Competition {comp.name} found fewer than two classes in the data ({list(classes or [])}):"
                            " check that the download holds its training images and labels.")
        self.classes = tuple(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        names = "|".join(re.escape(c) for c in sorted(self.classes, key=len, reverse=True))
        self._prefix = re.compile(rf"^({names})s?[._\- ]", re.IGNORECASE)
        self._folders = {f.lower(): i for c, i in self.index.items() for f in (c, c + "s")}  # cat/, cats/, Dog/

    # ---- where a file sits ----------------------------------------------------------------------------------------
    def _relative(self, path: Path) -> str:
        """The file's path inside the root that holds it (the folders above a download never label it): its name
        alone when no root holds it, the path as given when there are no roots (``label_from_path``)."""
        if not self.roots:
            return Path(path).as_posix()
        path = Path(path).resolve()
        for root in self.roots:
            if path.is_relative_to(root) and path != root:  # a root may be a single file given with --from
                return path.relative_to(root).as_posix()
        return path.name

    def _is_train(self, path: Path) -> bool:
        return bool(self.train_glob.match(self._relative(path)))

    # ---- labels ------------------------------------------------------------------------------------------------------
    def _labels_table(self) -> dict[str, str]:
        """file name -> class name, from the labels CSV (pixels: the PNGs written from it)."""
        t = self.comp.train
        found = [p for r in self.roots for p in ([r] if r.name == t.csv and r.is_file() else r.rglob(t.csv))
                 if p.is_file()]
        if not found:
            raise DataError(f"Competition {self.comp.name} labels its training images with {t.csv}, which is not in "
                            f"the download ({', '.join(str(r) for r in self.roots)}): pass it too (--from FILE).")
        if t.labels == "pixels":
            return {}  # labels come with the PNGs written from the pixel file (see pixel_images)
        try:
            labels = pd.read_csv(found[0], dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{found[0]} cannot be read as a CSV ({exc}).") from None
        missing = [c for c in (t.id_column, t.label_column) if c not in labels.columns]
        if missing:
            raise DataError(f"{found[0]} has no column {missing[0]!r} (it has {', '.join(labels.columns)}): the "
                            f"competition's spec names it as train.{'id' if missing[0] == t.id_column else 'label'}"
                            "_column.")
        return {t.file.format(id=i): label for i, label in zip(labels[t.id_column], labels[t.label_column],
                                                                strict=True)}

    def train_label(self, path: Path) -> int | str | None:
        """The class index of a training image; None when it is no training image; a str: why it has no label."""
        mode = self.comp.train.labels
        if mode == "name":
            m = self._prefix.match(path.name)
            if m:
                return self.index[next(c for c in self.classes if c.lower() == m.group(1).lower())]
            for parent in reversed(Path(self._relative(path)).parent.parts):  # folders inside the download only
                if parent.lower() in self._folders:
                    return self._folders[parent.lower()]
            return None
        if not self._is_train(path):
            return None
        if mode == "folder":
            name = path.parent.name
            return self.index.get(name, f"its folder {name!r} is not one of the classes")
        label = self.table.get(path.name)
        if label is None:
            return f"it is not listed in {self.comp.train.csv}"
        return self.index.get(label, f"its label {label!r} is not one of the classes")

    def test_id(self, path: Path) -> int | str | None:
        """The test id of an image, or None when it is no test image."""
        if not self.test_glob.match(self._relative(path)):
            return None
        kind = self.comp.test.id
        if kind in ("number", "row"):
            return int(path.stem) if re.fullmatch(r"[0-9]+", path.stem) else None
        return path.stem if kind == "stem" else path.name

    def why_no_test(self, train_paths: Iterable[Path]) -> str:
        """Why a download of this competition holds no test image (it has a test set): one sentence for the user.

        Args:
            train_paths: the images taken as training images.
        """
        taken = [Path(p) for p in train_paths if self.test_id(Path(p)) is not None]
        if taken:
            return (f"{len(taken)} of the training images would be test images by their names (such as "
                    f"{self._relative(taken[0])}) but a class folder inside the download labels them: if they are "
                    "the test set, unpack them outside class folders and give that folder or archive with --from.")
        return (f"no image file matches the competition's test images ({self.comp.test.images}, "
                f"{self.comp.test.id} ids): pass the test archive too (--from FILE or --url URL).")

    def unlabelled(self) -> str:
        """Why a file that is neither a training nor a test image was left out (catalog_problems.csv)."""
        t = self.comp.train
        if t.labels == "name":
            return (f"label unknown: the name does not start with a class ({', '.join(self.classes)}), no class "
                    "folder holds it, and it is not a numeric test id")
        return f"neither a training image ({t.images}) nor a test image ({self.comp.test.images})"


# ---- images inside a pixel CSV -------------------------------------------------------------------------------------
def pixel_images(comp: Competition, roots: list[Path], out_dir: Path, progress: bool = False) -> list[Path]:
    """Write the images of a pixel CSV competition (Digit Recognizer) as PNG files, once; return their folders.

    Training images go to ``out_dir/train/<class>/<row>.png`` (labelled by their class folder) and test images
    to ``out_dir/test/<row>.png`` (their id: the CSV row, from 1). A marker records the CSVs' sizes and times, so
    a second download writes nothing.
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
    marker = {n: [p.stat().st_size, p.stat().st_mtime_ns] for n, p in csvs.items()}
    done = out_dir / ".written.json"
    if done.exists() and json.loads(done.read_text()) == marker:
        return [out_dir]
    for name, part in ((t.csv, "train"), (comp.test.csv, "test")):
        frame = pd.read_csv(csvs[name])
        labels = frame.pop(t.label_column).astype(str) if part == "train" and t.label_column in frame else None
        if part == "train" and labels is None:
            raise DataError(f"{csvs[name]} has no column {t.label_column!r}: the competition's labels.")
        pixels = frame.to_numpy()
        if pixels.shape[1] != t.side * t.side:
            raise DataError(f"{csvs[name]} has {pixels.shape[1]} pixel columns, not {t.side}x{t.side}: the spec's "
                            "train.side does not fit the file.")
        rows = track(range(len(frame)), total=len(frame), description=f"write {name} as PNG", enabled=progress)
        for i in rows:
            folder = out_dir / part / (labels.iloc[i] if labels is not None else "")
            folder.mkdir(parents=True, exist_ok=True)
            img = np.clip(pixels[i], 0, 255).astype(np.uint8).reshape(t.side, t.side)
            Image.fromarray(img, mode="L").save(folder / f"{i + 1}.png")
    write_json(done, marker)
    return [out_dir]


def resolve_pixels(comp: Competition) -> Competition:
    """A pixel competition as its written PNGs are labelled: by class folder, test ids from their names."""
    return dataclasses.replace(comp, train=dataclasses.replace(comp.train, labels="folder", images="train/*/*.png"),
                               test=dataclasses.replace(comp.test, images="test/*.png"))
