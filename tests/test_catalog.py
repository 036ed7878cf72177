import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline.data.catalog as catalog
from pipeline.data.catalog import label_from_path, read_test, scan, write_catalog
from pipeline.data.images import decode_resized
from pipeline.errors import DataError
from pipeline.predict.formats import read_test_ids
from pipeline.predict.validation import validate_submission
from tests.conftest import SAMPLE
from tests.images import sample_image, sample_jpeg, save


@pytest.mark.parametrize("path,label", [
    ("train/cat.12.jpg", 0), ("train/dog.7.jpg", 1), ("x/dog_7.jpg", 1), ("x/Cat-3.png", 0),
    ("PetImages/Dog/11702.jpg", 1), ("data/cats/a.jpg", 0), ("train/dogs/b.jpeg", 1),
    ("test/12.jpg", None), ("x/catalog.jpg", None), ("x/hotdog.1.jpg", None),
])
def test_label_from_name_or_folder(path, label):
    assert label_from_path(Path(path)) == label


@pytest.fixture
def messy(tmp_path) -> Path:
    """One folder with every kind of file a real archive holds."""
    root = tmp_path / "raw"
    good = sample_image(0)
    save(good, root / "train" / "cat.1.jpg")
    save(good.convert("L"), root / "train" / "cat.2.jpg")  # grayscale JPEG
    save(good.convert("CMYK"), root / "train" / "dog.3.jpg")  # CMYK JPEG
    save(sample_image(1, "dog").quantize(64), root / "train" / "dog.4.png")  # palette PNG
    save(sample_image(2, "dog").convert("RGBA"), root / "train" / "dogs" / "x.png")  # RGBA in a class folder
    data = sample_jpeg(3)
    (root / "train" / "cat.5.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (root / "train" / "dog.6.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)  # corrupt
    (root / "train" / "cat.666.jpg").write_bytes(b"")  # zero-length, as in PetImages
    (root / "train" / "Thumbs.db").write_bytes(b"\x00" * 100)
    save(good, root / "train" / "holiday.jpg")  # no label
    save(sample_image(4), root / "test" / "10.jpg")
    save(sample_image(5), root / "test" / "2.jpg")
    return root


def test_scan_keeps_readable_images_and_reports_the_rest(messy):
    c = scan([messy], workers=1)
    names = sorted(Path(p).name for p in c.train.path)
    assert names == ["cat.1.jpg", "cat.2.jpg", "dog.3.jpg", "dog.4.png", "x.png"]
    assert dict(zip((Path(p).name for p in c.train.path), c.train.label, strict=True)) == {
        "cat.1.jpg": 0, "cat.2.jpg": 0, "dog.3.jpg": 1, "dog.4.png": 1, "x.png": 1}
    assert c.test.id.tolist() == [2, 10]  # numeric order
    reasons = {Path(p).name: r for p, r in zip(c.problems.path, c.problems.reason, strict=True)}
    assert set(reasons) == {"cat.5.jpg", "dog.6.jpg", "cat.666.jpg", "holiday.jpg"}
    assert "truncated" in reasons["cat.5.jpg"]
    assert reasons["holiday.jpg"].startswith("label unknown")
    assert c.skipped == 1  # Thumbs.db
    assert all(len(h) == 16 for h in c.train.phash)


def test_odd_modes_decode_to_rgb(messy):
    for name in ("cat.2.jpg", "dog.3.jpg", "dog.4.png", "dogs/x.png"):
        arr = decode_resized(messy / "train" / name, 40)
        assert arr.shape == (40, 40, 3) and arr.dtype == np.uint8
    with pytest.raises(DataError, match="cat.5.jpg"):
        decode_resized(messy / "train" / "cat.5.jpg", 40)


def test_second_scan_decodes_only_changed_files(messy, tmp_path, monkeypatch):
    cache = tmp_path / "verified.csv"
    scan([messy], cache_csv=cache, workers=1)
    calls = []
    real = catalog.verify_image
    monkeypatch.setattr(catalog, "verify_image", lambda p: calls.append(p) or real(p))
    again = scan([messy], cache_csv=cache, workers=1)
    assert calls == [] and len(again.train) == 5
    good = messy / "train" / "cat.1.jpg"
    good.write_bytes(good.read_bytes()[:300])  # the photo is damaged after the first scan
    third = scan([messy], cache_csv=cache, workers=1)
    assert calls == [str(good.resolve())]
    assert str(good.resolve()) in set(third.problems.path)


def test_duplicate_test_ids_are_refused(tmp_path):
    save(sample_image(0), tmp_path / "a" / "test" / "1.jpg")
    save(sample_image(1), tmp_path / "b" / "test" / "1.jpg")
    with pytest.raises(DataError, match="Test id 1 appears more than once"):
        scan([tmp_path], workers=1)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="No images found"):
        scan([tmp_path], workers=1)


def test_an_unreadable_test_photo_keeps_its_id(tmp_path):
    """A truncated test/7.jpg stays in test.csv (readable False), so a submission without id 7 is invalid."""
    root = tmp_path / "raw"
    save(sample_image(0), root / "train" / "cat.1.jpg")
    save(sample_image(0, "dog"), root / "train" / "dog.1.jpg")
    save(sample_image(4), root / "test" / "1.jpg")
    data = sample_jpeg(5)
    (root / "test" / "7.jpg").write_bytes(data[: len(data) // 2])
    data_dir = tmp_path / "data"
    write_catalog(scan([root], workers=1), data_dir)

    test = pd.read_csv(data_dir / "test.csv")
    assert test.id.tolist() == [1, 7] and test.readable.tolist() == [True, False]
    assert read_test(data_dir).readable.tolist() == [True, False]
    problems = pd.read_csv(data_dir / "catalog_problems.csv")
    (reason,) = problems.reason[problems.path == str((root / "test" / "7.jpg").resolve())]
    assert reason.startswith("unreadable test image (") and "kept in test.csv" in reason
    assert "neutral prediction" in reason
    assert len(pd.read_csv(data_dir / "train.csv")) == 2

    ids = read_test_ids(data_dir / "test.csv")
    assert ids == [1, 7]
    (tmp_path / "sub.csv").write_text("id,label\n1,0\n")
    assert "1 test id(s) are missing: 7." in validate_submission(tmp_path / "sub.csv", ids, "course")


def test_a_test_csv_without_the_readable_column_loads_as_all_readable(tmp_path):
    (tmp_path / "test.csv").write_text("id,path,width,height\n0,test/0.jpg,10,10\n1,test/1.jpg,10,10\n")
    test = read_test(tmp_path / "test.csv")
    assert test.readable.tolist() == [True, True] and test.readable.dtype == bool
    assert read_test_ids(tmp_path / "test.csv") == [0, 1]


# ---- labels come from inside the download, never from the folders above it (issue 28) ---------------------------

def _download_in(folder: Path, monkeypatch, *names: str):
    from typer.testing import CliRunner

    from pipeline.cli import app

    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    return CliRunner().invoke(app, ["download", *(a for n in names for a in ("--from", n)), "--folds", "3",
                                    "--no-progress"], catch_exceptions=False)


def test_a_working_folder_named_cats_labels_nothing(tmp_path, monkeypatch):
    work = tmp_path / "cats"
    work.mkdir()
    for name in ("train.zip", "test.zip"):
        shutil.copy(SAMPLE / name, work / name)
    r = _download_in(work, monkeypatch, "train.zip", "test.zip")
    assert r.exit_code == 0, r.output
    assert "train: 600 images (300 cats, 300 dogs)" in r.output and "test:  100 images" in r.output
    assert "no test image" not in r.output
    assert len(read_test(work / "data")) == 100


def test_a_download_without_test_images_says_why(tmp_path, monkeypatch):
    # only the training archive: the test archive was not given
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(SAMPLE / "train.zip", work / "train.zip")
    r = _download_in(work, monkeypatch, "train.zip")
    assert r.exit_code == 0, r.output
    assert "test: no test image, so nothing to predict: no image file matches the competition's test images" \
        in " ".join(r.output.split()) and "pass the test archive too" in r.output

    # test photos unpacked inside a class folder of the download: they became training cats, and it says so
    photos = tmp_path / "photos"
    for i in range(4):
        save(sample_image(i), photos / "train" / f"cat.{i}.jpg")
        save(sample_image(i, "dog"), photos / "train" / f"dog.{i}.jpg")
        save(sample_image(10 + i), photos / "cats" / f"{i + 1}.jpg")
    r = _download_in(tmp_path / "w2", monkeypatch, str(photos))
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "train: 12 images (8 cats, 4 dogs)" in said
    assert "4 of the training images would be test images by their names (such as cats/1.jpg) but a class folder " \
           "inside the download labels them" in said

