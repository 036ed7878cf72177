"""Real handwritten digits laid out exactly as six Kaggle competitions lay out their data downloads.

scikit-learn ships 1,797 real 8x8 grey scans of handwritten digits (``load_digits``, values 0-16, 10 classes). Each
function here writes a folder that looks like one competition's download, made from those digits, and returns a
:class:`CompetitionData`: the folder, the files to pass to ``pipeline download --from ...`` (in order), the class
names in their order, the true label of every test id and, for a binary competition, the positive class.

The digits are split once, deterministically (``SEED``), into a training part and a held-out test part (80/20,
stratified by digit), so a short training can be checked against the held-out labels. Digit ``d`` is class
``classes[d]`` (for the binary aerial-cactus layout: digits 5-9 are the positive class "1").

Every layout builds in well under a second or two on a laptop CPU; all images together are a few MB. Archives are
written in memory (no loose image files) with fixed timestamps, so the same call gives the same bytes (7z archives
aside: py7zr stamps them with the current time).

Not a test module: nothing here is collected by pytest. ``python tests/competition_data.py`` builds every layout in
a temporary folder, checks it and prints how long each took.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SEED = 0
TEST_FRACTION = 0.2

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGIT_CLASSES = [str(d) for d in range(10)]
# ten of the competition's 120 breeds, in its spelling (lowercase, underscores); sorted, as its sample file orders them
DOG_BREEDS = ["affenpinscher", "afghan_hound", "african_hunting_dog", "airedale", "american_staffordshire_terrier",
              "appenzeller", "australian_terrier", "basenji", "basset", "beagle"]
# ten of the competition's twelve species (the other two: "Small-flowered Cranesbill", "Sugar beet")
PLANT_SPECIES = ["Black-grass", "Charlock", "Cleavers", "Common Chickweed", "Common wheat", "Fat Hen",
                 "Loose Silky-bent", "Maize", "Scentless Mayweed", "Shepherds Purse"]
CACTUS_CLASSES = ["0", "1"]  # has_cactus; digits 0-4 -> "0", digits 5-9 -> "1"

_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class CompetitionData:
    """What a test needs from one written layout.

    ``truth`` and ``train`` are ``id,label`` frames with ``label`` the class name (a string). Ids are Python ints
    where the competition's ids are numbers (cifar-10: image number; digit-recognizer: 1-based row of test.csv) and
    strings otherwise (dog-breed: 32 hex characters; plant-seedlings and aerial-cactus: the file name with its
    extension). ``truth`` is in the order of the competition's sample submission.
    """

    competition: str  # the Kaggle slug, e.g. "cifar-10"
    root: Path  # the folder written
    files: list[Path]  # what to pass to ``pipeline download --from``, in order
    classes: list[str]  # class names; digit d is classes[d] (binary: "0", "1")
    truth: pd.DataFrame  # id,label of every test id
    train: pd.DataFrame  # id,label of every training image
    positive: str | None = None  # binary competitions: the class that counts as positive
    sample_submission: Path | None = field(default=None)  # the competition's sample submission, where it has one
    kind: str = "single"  # the target kind (Target.kind); a label is then a grade (ordinal, as its class name), a
    # number (regression) or a tuple of label names in class order (multilabel)
    groups: dict | None = None  # training id -> its group (the spec's target.group: a patient), where it has one

    @property
    def test_ids(self) -> list:
        return self.truth["id"].tolist()


# ---------------------------------------------------------------------------------------------------------- digits


@cache
def _split(limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_digits, test_images, test_digits)``: images uint8 0-255, 8x8, white digit on black."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    target = digits.target.astype(int)
    if limit is not None and limit < len(target):
        if limit < 50:
            raise ValueError(f"limit={limit}: keep at least 50 digits (5 of each) so both parts hold every digit")
        images, _, target, _ = train_test_split(images, target, train_size=limit, stratify=target, random_state=SEED)
    tr_x, te_x, tr_y, te_y = train_test_split(images, target, test_size=TEST_FRACTION, stratify=target,
                                              random_state=SEED)
    for a in (tr_x, te_x, tr_y, te_y):
        a.flags.writeable = False
    return tr_x, tr_y, te_x, te_y


def split(limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed train/test split of the digits: ``(train_images, train_digits, test_images, test_digits)``.

    ``limit`` keeps only that many digits (a stratified subset, also fixed) for faster layouts.
    """
    return _split(limit)


def _picture(img8: np.ndarray, size: int, rgb: bool, index: int, invert: bool = False) -> Image.Image:
    """One 8x8 scan upsampled (bilinear) to ``size`` px; RGB ones get a tint that varies with ``index``."""
    img = Image.fromarray(255 - img8 if invert else img8, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    if not rgb:
        return img
    grey = np.asarray(img, dtype=np.float32) / 255
    tint = np.array([(index * 37) % 256, (index * 91 + 80) % 256, (index * 53 + 160) % 256], np.float32) / 255
    tint = 0.55 + 0.45 * tint  # never dark: the digit stays the brightest thing in the image
    rgb_img = grey[..., None] * tint[None, None, :] * 255
    return Image.fromarray(np.round(rgb_img).astype(np.uint8), mode="RGB")


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=90)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def _write_zip(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:  # PNG/JPEG do not shrink further
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return path


def _write_7z(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    import py7zr

    path.parent.mkdir(parents=True, exist_ok=True)
    # the real archives are LZMA; "copy" keeps writing fast and every 7z reader reads it
    with py7zr.SevenZipFile(path, "w", filters=[{"id": py7zr.FILTER_COPY}]) as z:
        for name, data in members:
            z.writestr(data, name)
    return path


def _hex_ids(prefix: str, n: int, length: int) -> list[str]:
    """``n`` distinct deterministic lowercase hex strings of ``length`` characters."""
    ids: list[str] = []
    seen: set[str] = set()
    counter = 0
    while len(ids) < n:
        h = hashlib.md5(f"{prefix}-{counter}".encode()).hexdigest()[:length]
        counter += 1
        if h not in seen:
            seen.add(h)
            ids.append(h)
    return ids


def _frame(ids: list, labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(ids, dtype=object), "label": pd.Series(labels, dtype=object)})


def _root(root: Path | str) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


# -------------------------------------------------------------------------------------------------------- layouts


def cifar10(root: Path | str, size: int = 32, limit: int | None = None) -> CompetitionData:
    """Kaggle "CIFAR-10 - Object Recognition in Images" (``cifar-10``)::

        root/train.7z             train/1.png ... train/<N>.png        PNG size x size RGB, numbered from 1
        root/trainLabels.csv      id,label                             1,frog  (every training number, ascending)
        root/test.7z              test/1.png ... test/<M>.png          numbered from 1
        root/sampleSubmission.csv id,label                             1,cat   (every test number, ascending)

    Classes, in this order: airplane automobile bird cat deer dog frog horse ship truck (digit d -> class d).
    ``files``: train.7z, trainLabels.csv, test.7z, sampleSubmission.csv. Test ids are ints.
    """
    root = _root(root)
    tr_x, tr_y, te_x, te_y = split(limit)
    train_ids = list(range(1, len(tr_y) + 1))
    test_ids = list(range(1, len(te_y) + 1))
    train_7z = _write_7z(root / "train.7z", ((f"train/{i}.png", _encode(_picture(x, size, True, i), "PNG"))
                                             for i, x in zip(train_ids, tr_x, strict=True)))
    test_7z = _write_7z(root / "test.7z", ((f"test/{i}.png", _encode(_picture(x, size, True, i + 7), "PNG"))
                                           for i, x in zip(test_ids, te_x, strict=True)))
    train = _frame(train_ids, [CIFAR10_CLASSES[d] for d in tr_y])
    labels_csv = root / "trainLabels.csv"
    train.to_csv(labels_csv, index=False)
    sample = root / "sampleSubmission.csv"
    pd.DataFrame({"id": test_ids, "label": "cat"}).to_csv(sample, index=False)
    return CompetitionData("cifar-10", root, [train_7z, labels_csv, test_7z, sample], list(CIFAR10_CLASSES),
                           _frame(test_ids, [CIFAR10_CLASSES[d] for d in te_y]), train, sample_submission=sample)


def cifar10_zip(root: Path | str, size: int = 32, limit: int | None = None) -> CompetitionData:
    """The :func:`cifar10` files as ``kaggle competitions download -c cifar-10`` delivers them::

        root/cifar-10.zip         sampleSubmission.csv, test.7z, train.7z, trainLabels.csv  (at the top level)

    ``files``: cifar-10.zip alone. The four files are built in ``root/.cifar-10-parts`` and removed afterwards.
    """
    root = _root(root)
    parts = root / ".cifar-10-parts"
    data = cifar10(parts, size=size, limit=limit)
    archive = _write_zip(root / "cifar-10.zip", ((p.name, p.read_bytes()) for p in sorted(data.files)))
    for p in data.files:
        p.unlink()
    parts.rmdir()
    return CompetitionData("cifar-10", root, [archive], data.classes, data.truth, data.train)


def digit_recognizer(root: Path | str, size: int = 28, limit: int | None = None) -> CompetitionData:
    """Kaggle "Digit Recognizer" (``digit-recognizer``)::

        root/train.csv              label,pixel0,...,pixel783   one row per image: its digit, then 28x28 grey 0-255
                                                                flattened row-major (pixel<28*row+col>)
        root/test.csv               pixel0,...,pixel783         no label
        root/sample_submission.csv  ImageId,Label               1,0 ... <M>,0  (ImageId = 1-based row of test.csv)

    Classes "0".."9". Test ids are the 1-based row numbers of test.csv (ints). ``files``: train.csv, test.csv,
    sample_submission.csv. ``size`` other than 28 changes the pixel count (size*size columns).
    """
    root = _root(root)
    tr_x, tr_y, te_x, te_y = split(limit)
    cols = [f"pixel{i}" for i in range(size * size)]

    def pixels(images: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(_picture(x, size, False, 0)).reshape(-1) for x in images])

    def write(path: Path, header: list[str], rows: np.ndarray) -> Path:
        # np.savetxt is slow for wide integer tables; join text per row instead
        text = [",".join(header)] + [",".join(map(str, r)) for r in rows.tolist()]
        path.write_text("\n".join(text) + "\n")
        return path

    train_csv = write(root / "train.csv", ["label", *cols], np.column_stack([tr_y, pixels(tr_x)]))
    test_csv = write(root / "test.csv", cols, pixels(te_x))
    test_ids = list(range(1, len(te_y) + 1))
    sample = root / "sample_submission.csv"
    pd.DataFrame({"ImageId": test_ids, "Label": 0}).to_csv(sample, index=False)
    return CompetitionData("digit-recognizer", root, [train_csv, test_csv, sample], list(DIGIT_CLASSES),
                           _frame(test_ids, [DIGIT_CLASSES[d] for d in te_y]),
                           _frame(list(range(1, len(tr_y) + 1)), [DIGIT_CLASSES[d] for d in tr_y]),
                           sample_submission=sample)


def dog_breed(root: Path | str, size: int = 64, limit: int | None = None) -> CompetitionData:
    """Kaggle "Dog Breed Identification" (``dog-breed-identification``)::

        root/train.zip              train/<id>.jpg              JPEG size x size RGB; id = 32 lowercase hex chars
        root/labels.csv             id,breed                    one row per training image, sorted by id
        root/test.zip               test/<id>.jpg
        root/sample_submission.csv  id,<breed>,...,<breed>      one column per breed in sorted order, every test
                                                                id sorted, each probability 1/len(classes)

    Classes: ``DOG_BREEDS`` (digit d -> DOG_BREEDS[d]), already sorted. ``files``: train.zip, labels.csv, test.zip,
    sample_submission.csv. Test ids are the 32-character hex strings (no extension).
    """
    root = _root(root)
    tr_x, tr_y, te_x, te_y = split(limit)
    ids = _hex_ids("dog-breed", len(tr_y) + len(te_y), 32)
    train_ids, test_ids = ids[: len(tr_y)], ids[len(tr_y):]
    train_zip = _write_zip(root / "train.zip", sorted(
        (f"train/{i}.jpg", _encode(_picture(x, size, True, k, invert=k % 3 == 0), "JPEG"))
        for k, (i, x) in enumerate(zip(train_ids, tr_x, strict=True))))
    test_zip = _write_zip(root / "test.zip", sorted(
        (f"test/{i}.jpg", _encode(_picture(x, size, True, k + 5, invert=k % 3 == 1), "JPEG"))
        for k, (i, x) in enumerate(zip(test_ids, te_x, strict=True))))
    train = _frame(train_ids, [DOG_BREEDS[d] for d in tr_y]).sort_values("id", ignore_index=True)
    labels_csv = root / "labels.csv"
    train.rename(columns={"label": "breed"}).to_csv(labels_csv, index=False)
    truth = _frame(test_ids, [DOG_BREEDS[d] for d in te_y]).sort_values("id", ignore_index=True)
    sample = root / "sample_submission.csv"
    probs = pd.DataFrame(1 / len(DOG_BREEDS), index=range(len(truth)), columns=sorted(DOG_BREEDS))
    pd.concat([truth[["id"]], probs], axis=1).to_csv(sample, index=False)
    return CompetitionData("dog-breed-identification", root, [train_zip, labels_csv, test_zip, sample],
                           list(DOG_BREEDS), truth, train, sample_submission=sample)


def plant_seedlings(root: Path | str, size: int = 48, limit: int | None = None) -> CompetitionData:
    """Kaggle "Plant Seedlings Classification" (``plant-seedlings-classification``)::

        root/train.zip              train/<Species>/<file>.png  a folder per species (names with spaces and
                                                                capitals); file = 9 lowercase hex chars + ".png"
        root/test.zip               test/<file>.png
        root/sample_submission.csv  file,species                0a1b2c3d4.png,Black-grass (every test file, sorted)

    PNG size x size RGB. Classes: ``PLANT_SPECIES`` (digit d -> PLANT_SPECIES[d]). Test ids are file names with
    their ``.png``. ``files``: train.zip, test.zip, sample_submission.csv. There is no labels file: the folder
    names are the labels.
    """
    root = _root(root)
    tr_x, tr_y, te_x, te_y = split(limit)
    names = [f"{h}.png" for h in _hex_ids("plant-seedlings", len(tr_y) + len(te_y), 9)]
    train_ids, test_ids = names[: len(tr_y)], names[len(tr_y):]
    train_zip = _write_zip(root / "train.zip", sorted(
        (f"train/{PLANT_SPECIES[d]}/{i}", _encode(_picture(x, size, True, k, invert=k % 4 == 0), "PNG"))
        for k, (i, x, d) in enumerate(zip(train_ids, tr_x, tr_y, strict=True))))
    test_zip = _write_zip(root / "test.zip", sorted(
        (f"test/{i}", _encode(_picture(x, size, True, k + 3, invert=k % 4 == 1), "PNG"))
        for k, (i, x) in enumerate(zip(test_ids, te_x, strict=True))))
    truth = _frame(test_ids, [PLANT_SPECIES[d] for d in te_y]).sort_values("id", ignore_index=True)
    sample = root / "sample_submission.csv"
    pd.DataFrame({"file": truth["id"], "species": PLANT_SPECIES[0]}).to_csv(sample, index=False)
    train = _frame(train_ids, [PLANT_SPECIES[d] for d in tr_y]).sort_values("id", ignore_index=True)
    return CompetitionData("plant-seedlings-classification", root, [train_zip, test_zip, sample],
                           list(PLANT_SPECIES), truth, train, sample_submission=sample)


def aerial_cactus(root: Path | str, size: int = 32, limit: int | None = None) -> CompetitionData:
    """Kaggle "Aerial Cactus Identification" (``aerial-cactus-identification``)::

        root/train.zip              train/<id>                  id = 32 lowercase hex chars + ".jpg"; JPEG RGB
        root/train.csv              id,has_cactus               <32 hex>.jpg,1  (has_cactus 0 or 1)
        root/test.zip               test/<id>
        root/sample_submission.csv  id,has_cactus               <32 hex>.jpg,0.5  (every test id, sorted)

    Binary: has_cactus = 1 for digits 5-9 (the positive class "1"), 0 for digits 0-4; classes "0", "1". The ids
    (in the CSVs, in ``truth``) include the ``.jpg``. ``files``: train.zip, train.csv, test.zip,
    sample_submission.csv.
    """
    root = _root(root)
    tr_x, tr_y, te_x, te_y = split(limit)
    names = [f"{h}.jpg" for h in _hex_ids("aerial-cactus", len(tr_y) + len(te_y), 32)]
    train_ids, test_ids = names[: len(tr_y)], names[len(tr_y):]
    train_zip = _write_zip(root / "train.zip", sorted(
        (f"train/{i}", _encode(_picture(x, size, True, k), "JPEG"))
        for k, (i, x) in enumerate(zip(train_ids, tr_x, strict=True))))
    test_zip = _write_zip(root / "test.zip", sorted(
        (f"test/{i}", _encode(_picture(x, size, True, k + 1), "JPEG"))
        for k, (i, x) in enumerate(zip(test_ids, te_x, strict=True))))
    train = _frame(train_ids, [CACTUS_CLASSES[int(d >= 5)] for d in tr_y])
    train_csv = root / "train.csv"
    train.rename(columns={"label": "has_cactus"}).to_csv(train_csv, index=False)
    truth = _frame(test_ids, [CACTUS_CLASSES[int(d >= 5)] for d in te_y]).sort_values("id", ignore_index=True)
    sample = root / "sample_submission.csv"
    pd.DataFrame({"id": truth["id"], "has_cactus": 0.5}).to_csv(sample, index=False)
    return CompetitionData("aerial-cactus-identification", root, [train_zip, train_csv, test_zip, sample],
                           list(CACTUS_CLASSES), truth, train, positive="1", sample_submission=sample)


LAYOUTS = {"cifar-10": cifar10, "cifar-10-zip": cifar10_zip, "digit-recognizer": digit_recognizer,
           "dog-breed-identification": dog_breed, "plant-seedlings-classification": plant_seedlings,
           "aerial-cactus-identification": aerial_cactus}


def _self_check() -> None:
    """Build every layout in a temporary folder and check what it wrote against the competition's format."""
    import tempfile
    import time

    import py7zr

    with tempfile.TemporaryDirectory() as tmp:
        for name, build in LAYOUTS.items():
            start = time.perf_counter()
            data = build(Path(tmp) / name)
            took = time.perf_counter() - start
            assert all(p.is_file() and p.parent == data.root for p in data.files), data.files
            assert sorted(p.name for p in data.root.iterdir()) == sorted(p.name for p in data.files)
            assert list(data.truth.columns) == ["id", "label"] and data.truth["id"].is_unique
            assert set(data.truth["label"]) == set(data.classes), name
            assert len(data.truth) + len(data.train) == 1797
            size_mb = sum(p.stat().st_size for p in data.files) / 1e6
            if name == "cifar-10":
                with py7zr.SevenZipFile(data.root / "train.7z") as z:
                    members = sorted(n for n in z.getnames() if n.endswith(".png"))
                assert len(members) == len(data.train) and "train/1.png" in members
                labels = pd.read_csv(data.root / "trainLabels.csv")
                assert list(labels.columns) == ["id", "label"] and labels["id"].tolist() == data.train["id"].tolist()
                with py7zr.SevenZipFile(data.root / "test.7z") as z:
                    z.extract(Path(tmp) / "cifar-out", targets=["test/1.png"])
                img = Image.open(Path(tmp) / "cifar-out" / "test" / "1.png")
                assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"
            elif name == "cifar-10-zip":
                with zipfile.ZipFile(data.files[0]) as z:
                    assert sorted(z.namelist()) == ["sampleSubmission.csv", "test.7z", "train.7z", "trainLabels.csv"]
            elif name == "digit-recognizer":
                train = pd.read_csv(data.root / "train.csv")
                test = pd.read_csv(data.root / "test.csv")
                assert list(train.columns) == ["label"] + [f"pixel{i}" for i in range(784)]
                assert list(test.columns) == [f"pixel{i}" for i in range(784)] and len(test) == len(data.truth)
                assert train.to_numpy().min() >= 0 and train.iloc[:, 1:].to_numpy().max() <= 255
                assert (train["label"].astype(str) == data.train["label"]).all()
            elif name == "dog-breed-identification":
                sample = pd.read_csv(data.root / "sample_submission.csv")
                assert list(sample.columns) == ["id", *sorted(DOG_BREEDS)] and sample["id"].str.len().eq(32).all()
                with zipfile.ZipFile(data.root / "test.zip") as z:
                    assert sorted(z.namelist()) == sorted(f"test/{i}.jpg" for i in data.truth["id"])
                    img = Image.open(io.BytesIO(z.read(z.namelist()[0])))
                assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"
            elif name == "plant-seedlings-classification":
                with zipfile.ZipFile(data.root / "train.zip") as z:
                    folders = {n.split("/")[1] for n in z.namelist()}
                assert folders == set(PLANT_SPECIES)
                assert all(len(i) == 13 and i.endswith(".png") for i in data.truth["id"])
            elif name == "aerial-cactus-identification":
                train = pd.read_csv(data.root / "train.csv")
                assert list(train.columns) == ["id", "has_cactus"] and set(train["has_cactus"]) == {0, 1}
                assert all(len(i) == 36 and i.endswith(".jpg") for i in data.truth["id"])
            print(f"{name:32s} {took:5.2f} s  {size_mb:5.2f} MB  train {len(data.train)}  test {len(data.truth)}")


if __name__ == "__main__":
    _self_check()
