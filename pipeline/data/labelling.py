"""A competition's layout read off the unpacked files: which are training images and their class, which are test
images and their id (see :mod:`pipeline.competitions.spec`). Images inside a pixel CSV (Digit Recognizer) are
written out as PNG files first (:mod:`pipeline.data.pixels`).

Class names are compared in Unicode NFC, whichever form the files spell them in (a zip made on macOS stores
``Café`` decomposed, NFD), so one class is one class.
"""

from __future__ import annotations

import logging
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
        self.kind = comp.kind  # reads its target off the labels file (pipeline.targets)
        self.table: dict[str, str] = {}
        self.conflicts: dict[str, str] = {}  # file name -> the different labels the labels CSV gives it
        if comp.train.labels in ("csv", "pixels"):
            self.table = self._labels_table()
        classes = tuple(map(nfc, comp.classes)) if comp.classes else comp.classes
        if classes is None and (comp.classes_from == "labels" or comp.target.kind != "single"):
            classes = self.kind.classes_found(self.table.values())
        if classes is None and comp.classes_from == "folders":
            classes = comp.class_order(nfc(Path(f).parent.name) for f in files if self._is_train(Path(f)))
        if not classes or len(classes) < self.kind.min_classes:
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
        missing = [c for c in (t.id_column, *self.kind.needed_columns()) if c not in labels.columns]
        if missing:
            raise DataError(f"{found[0]} has no column {missing[0]!r} (it has {', '.join(labels.columns)}): the "
                            f"competition's spec names it as train.{'id' if missing[0] == t.id_column else 'label'}"
                            "_column.")
        pairs = pd.DataFrame({"file": [t.file.format(id=i) for i in labels[t.id_column]],
                              "label": self.kind.row_labels(labels, nfc)}).drop_duplicates()
        clash = pairs.file.duplicated(keep=False)
        self.conflicts = pairs[clash].groupby("file").label.agg(lambda s: ", ".join(sorted(s))).to_dict()
        if len(pairs) < len(labels):
            _logger.warning("%s lists %d id(s) more than once with the same label; each is kept once", found[0],
                            len(labels) - len(pairs))
        if self.conflicts:
            _logger.warning("%s gives %d id(s) different labels; they are left out of training (listed in "
                            "catalog_problems.csv)", found[0], len(self.conflicts))
        return dict(zip(pairs.file[~clash], pairs.label[~clash], strict=True))

    def train_label(self, path: Path) -> int | str | None:
        """The class index of a training image; None when it is no training image; a str: why it has no label."""
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
            return self.index.get(name, f"its folder {name!r} is not one of the classes")
        label = self.table.get(path.name)
        if path.name in self.conflicts:
            return f"{self.comp.train.csv} lists it more than once with different labels ({self.conflicts[path.name]})"
        if label is None:
            return f"it is not listed in {self.comp.train.csv}"
        return self.kind.catalogue_label(label, self.index)

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
