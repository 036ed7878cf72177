"""A competition's layout read off the unpacked files: which are training images and their class, which are test
images and their id (see :mod:`pipeline.competitions.spec`). Images inside a pixel CSV (Digit Recognizer) are
written out as PNG files first (:mod:`pipeline.data.pixels`).

Class names are compared in Unicode NFC, whichever form the files spell them in (a zip made on macOS stores
``Café`` decomposed, NFD), so one class is one class.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipeline.competitions.globs import Glob
from pipeline.competitions.spec import Competition
from pipeline.errors import DataError

_logger = logging.getLogger(__name__)


def nfc(name: str) -> str:
    """A class name in Unicode NFC (``Café`` composed), the one form every label is compared in."""
    return unicodedata.normalize("NFC", name)


class Labeller:
    """Labels and ids for the files under ``roots`` as ``comp`` lays them out.

    Args:
        comp: the competition (its classes may still be missing: they are then read from the data).
        roots: the folders the download unpacked (and folders given with --from).
        files: every image file under ``roots`` (to read class folders from).
    """

    def __init__(self, comp: Competition, roots: Iterable[Path], files: Iterable[Path] = ()):
        self.comp, self.roots = comp, [Path(r).resolve() for r in roots]
        self.train_glob, self.test_glob = Glob.of(comp.train.images), Glob.of(comp.test.images)
        self.table: dict[str, str] = {}  # file name -> its target as the labels file writes it
        self.groups: dict[str, str] = {}  # file name -> its group (target.group), kept in one fold
        self.conflicts: dict[str, str] = {}  # file name -> the different labels the labels CSV gives it
        self.test_files: dict[str, str] = {}  # test.id = "csv": file name -> the test id the test CSV lists
        if comp.train.labels in ("csv", "pixels", "coco"):
            self.table = self._labels_table()
        if comp.test.id == "csv":
            self.test_files = self._test_table()
        classes = tuple(map(nfc, comp.classes)) if comp.classes else comp.classes
        if classes is None and comp.classes_from == "labels":
            sep = comp.target.separator
            classes = comp.class_order(n for v in self.table.values() for n in (v.split(sep) if sep else [v]) if n)
        if classes is None and comp.classes_from == "folders":
            classes = comp.class_order(nfc(Path(f).parent.name) for f in files if self._is_train(Path(f)))
        least = 1 if comp.target.kind in ("multilabel", "regression") else 2
        if not classes or len(classes) < least:
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
        return self.train_glob.match(self._relative(path))

    # ---- labels ------------------------------------------------------------------------------------------------------
    def _find_csv(self, name: str, what: str) -> Path:
        """The one file called ``name`` in the download (a root may be the file itself, given with --from)."""
        found = [p for r in self.roots for p in ([r] if r.name == name and r.is_file() else r.rglob(name))
                 if p.is_file()]
        if not found:
            raise DataError(f"Competition {self.comp.name} {what} with {name}, which is not in the download "
                            f"({', '.join(str(r) for r in self.roots)}): pass it too (--from FILE).")
        return found[0]

    def _read_csv(self, csv: Path, columns: dict[str, str]) -> pd.DataFrame:
        """The CSV as text (ids with dots or leading zeros stay as written), with the spec's columns present."""
        try:
            frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{csv} cannot be read as a CSV ({exc}).") from None
        for column, field in columns.items():
            if column not in frame.columns:
                raise DataError(f"{csv} has no column {column!r} (it has {', '.join(frame.columns)}): the "
                                f"competition's spec names it as {field}.")
        return frame

    def _read_coco(self, path: Path, columns: dict[str, str]) -> pd.DataFrame:
        """COCO-style annotations (``images``, ``annotations`` with ``image_id``) as one text row per annotation: the
        annotation's fields beside its image's (``file_name``, ``location``, ...), with the spec's columns present."""
        try:
            coco = json.loads(path.read_text(encoding="utf-8"))
            images = pd.DataFrame(coco["images"]).astype(str).rename(columns={"id": "image_id"})
            notes = pd.DataFrame(coco["annotations"]).astype(str).drop(columns="id", errors="ignore")
            frame = notes.merge(images, on="image_id", how="inner", suffixes=("", "_image"))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} cannot be read as COCO annotations (images, annotations with image_id): "
                            f"{type(exc).__name__}: {exc}.") from None
        for column, field in columns.items():
            if column not in frame.columns:
                raise DataError(f"{path} has no field {column!r} in its images or annotations (they have "
                                f"{', '.join(frame.columns)}): the competition's spec names it as {field}.")
        return frame

    def _labels_table(self) -> dict[str, str]:
        """file name -> its target as written (a class name, a grade, a value, names joined by the separator, or a
        multilabel target's 0/1 cells joined by spaces), from the labels CSV (pixels: the PNGs written from it)."""
        t, target = self.comp.train, self.comp.target
        csv = self._find_csv(t.csv, "labels its training images")
        if t.labels == "pixels":
            return {}  # labels come with the PNGs written from the pixel file (see pixel_images)
        columns = {t.id_column: "train.id_column"} | dict.fromkeys(target.columns, "target.columns")
        columns |= {} if target.columns else {t.label_column: "train.label_column"}
        columns |= {target.group: "target.group"} if target.group else {}
        labels = self._read_coco(csv, columns) if t.labels == "coco" else self._read_csv(csv, columns)
        value = (labels[list(target.columns)].agg(" ".join, axis=1) if target.columns
                 else labels[t.label_column].map(nfc))
        pairs = pd.DataFrame({"file": [t.file.format(id=i) for i in labels[t.id_column]], "label": value,
                              "group": labels[target.group] if target.group else ""}).drop_duplicates(["file", "label"])
        clash = pairs.file.duplicated(keep=False)
        self.conflicts = pairs[clash].groupby("file").label.agg(lambda s: ", ".join(sorted(s))).to_dict()
        if len(pairs) < len(labels):
            _logger.warning("%s lists %d id(s) more than once with the same label; each is kept once", csv,
                            len(labels) - len(pairs))
        if self.conflicts:
            _logger.warning("%s gives %d id(s) different labels; they are left out of training (listed in "
                            "catalog_problems.csv)", csv, len(self.conflicts))
        self.groups = dict(zip(pairs.file, pairs.group, strict=True)) if target.group else {}
        return dict(zip(pairs.file[~clash], pairs.label[~clash], strict=True))

    def _test_table(self) -> dict[str, str]:
        """file name -> test id, from the test CSV (test.id = "csv"): the test images are exactly the ones it lists."""
        t = self.comp.test
        csv = self._find_csv(t.csv, "lists its test ids")
        ids = self._read_csv(csv, {t.id_column: "test.id_column"})[t.id_column]
        twice = ids[ids.duplicated()]
        if len(twice):
            raise DataError(f"{csv} lists the test id {twice.iloc[0]!r} more than once: each test image is one row.")
        files = [t.file.format(id=i) for i in ids]
        both = [f for f in files if f in self.table or f in self.conflicts]
        if both:
            raise DataError(f"{csv} lists {len(both)} image(s) that {self.comp.train.csv} labels for training (such as "
                            f"{both[0]}): an image is either a training or a test image; check the two files.")
        return dict(zip(files, ids, strict=True))

    def train_label(self, path: Path) -> int | float | str | None:
        """The catalogue label of a training image (see :func:`read_target`); None when it is no training image; a
        :class:`Why`: why it has no label."""
        mode = self.comp.train.labels
        if mode == "name":
            m = self._prefix.match(nfc(path.name))
            if m:
                return self.index[next(c for c in self.classes if c.lower() == m.group(1).lower())]
            for parent in map(nfc, reversed(Path(self._relative(path)).parent.parts)):  # inside the download only
                if parent.lower() in self._folders:
                    return self._folders[parent.lower()]
            return None
        if not self._is_train(path):
            return None
        if mode == "folder":
            name = nfc(path.parent.name)
            return self.index.get(name, Why(f"its folder {name!r} is not one of the classes"))
        label = self.table.get(path.name)
        if path.name in self.conflicts:
            return Why(f"{self.comp.train.csv} lists it more than once with different labels "
                       f"({self.conflicts[path.name]})")
        if label is None:
            return None if path.name in self.test_files else Why(f"it is not listed in {self.comp.train.csv}")
        return read_target(self.comp, self.index, label)

    def group(self, path: Path) -> str:
        """The group of a training image (target.group's value; "" without one)."""
        return self.groups.get(path.name, "")

    def missing(self, paths: Iterable[Path]) -> str:
        """Why the download lacks images its CSVs list ("" when it holds every one): a training image of the labels
        file, or a test image of the test ids file, with no file among ``paths``."""
        paths = [Path(p) for p in paths]
        for listed, csv, where, glob in ((self.table, self.comp.train.csv, "training", self.train_glob),
                                         (self.test_files, self.comp.test.csv, "test", self.test_glob)):
            names = {p.name for p in paths if glob.match(self._relative(p))} if listed else set()
            gone = [f for f in listed if f not in names]
            if gone:
                return (f"{csv} lists {len(gone)} {where} image(s) that the download does not hold (such as {gone[0]}, "
                        f"looked for as {glob.pattern}): pass the archive or folder that holds them with --from, or "
                        "fix the spec's file names.")
        return ""

    def test_id(self, path: Path) -> int | str | None:
        """The test id of an image, or None when it is no test image."""
        if not self.test_glob.match(self._relative(path)):
            return None
        kind = self.comp.test.id
        if kind == "csv":
            return self.test_files.get(path.name)
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


class Why(str):
    """Why a training image has no label (a multilabel label is a str too: "0 2")."""


def read_target(comp: Competition, index: dict[str, int], text: str) -> int | float | str:
    """The catalogue's label of a training image from its target as the labels file writes it (see Target); a
    :class:`Why` says why it has none. single, topk: the class index; ordinal: the grade; regression: the
    value; multilabel: the label indices, ascending, space-separated ("" for none)."""
    kind, target = comp.target.kind, comp.target
    if kind in ("single", "topk"):
        return index.get(text, Why(f"its label {text!r} is not one of the classes"))
    if kind == "ordinal":
        grade = _number(text)
        ok = grade is not None and grade.is_integer() and str(int(grade)) in index
        return int(grade) if ok else Why(f"its grade {text!r} is not one of {', '.join(index)}")
    if kind == "regression":
        value = _number(text)
        return value if value is not None else Why(f"its value {text!r} is not a number")
    if target.columns:
        cells = [_number(c) for c in text.split(" ")]
        if any(c not in (0, 1) for c in cells):
            return Why(f"its label columns hold {text!r}, not only 0 and 1 ({', '.join(target.columns)})")
        return " ".join(str(i) for i, c in enumerate(cells) if c == 1)
    names = [n for n in text.split(target.separator) if n]
    unknown = [n for n in names if n not in index]
    if unknown:
        return Why(f"its label {unknown[0]!r} is not one of the classes")
    return " ".join(str(i) for i in sorted({index[n] for n in names}))


def _number(text: str) -> float | None:
    """A finite number written as text, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
