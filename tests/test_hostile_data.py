"""Issue 27's hostile pass on the data side: re-downloads, pixel CSVs, labels CSVs, archives, class names, --weights
from another variant and --pseudo. Each case reproduced on real files (sklearn's digits laid out as the
competitions lay them out, real archives), then the right result or one line, and nothing written outside the data
folder or left inconsistent by a refused command."""

from __future__ import annotations

import io
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.competitions.spec import builtin_competitions
from pipeline.data.archives import extract_archive
from pipeline.data.download import download
from pipeline.data.folds import assign_folds
from pipeline.errors import DataError, ExtractError
from tests import competition_data as layouts
from tests.test_cli import invoke


def one_line(r) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    return r.output


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in Path(root).rglob("*")}


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# ---- T6, T7, R5: archives ------------------------------------------------------------------------------------------
def test_t6_a_tar_with_a_file_and_a_folder_of_the_same_name_is_one_line(tmp_path):
    """Before: FileExistsError (or NotADirectoryError) half-way through unpacking."""
    tar = _tar(tmp_path / "train.tar", [("train/x", b"a file"), ("train/x/cat.999.jpg", b"jpeg")])
    with pytest.raises(ExtractError, match=r"holds a file 'train/x' and also 'train/x/cat.999.jpg'"):
        extract_archive(tar, tmp_path / "out" / "train")
    assert not (tmp_path / "out").exists() or files_under(tmp_path / "out") == set()
    out = one_line(invoke("download", "--from", tar, "--data-dir", tmp_path / "data", "--no-progress"))
    assert "holds a file 'train/x'" in out
    assert not (tmp_path / "data" / "train.csv").exists()


def test_t7_a_member_name_over_255_bytes_is_one_line(tmp_path):
    """Before: OSError: File name too long."""
    tar = _tar(tmp_path / "train.tar", [("train/cat.1.jpg", b"jpeg"), ("train/" + "é" * 130 + ".jpg", b"jpeg")])
    with pytest.raises(ExtractError, match=r"has a name of 264 bytes, over the 255"):
        extract_archive(tar, tmp_path / "out" / "train")
    assert not (tmp_path / "out").exists() or files_under(tmp_path / "out") == set()


def test_r5_an_error_inside_a_nested_archive_names_the_archive_passed(tmp_path):
    """Before: the message named data/extracted/.X.partial/test.7z, a hidden folder that is gone by then."""
    outer = tmp_path / "comp.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("train.csv", "id,label\n")
        z.writestr("test.7z", b"7z\xbc\xaf\x27\x1c" + b"\0" * 40)  # a 7z signature and nothing valid after it
    with pytest.raises(ExtractError) as info:
        extract_archive(outer, tmp_path / "extracted" / "comp")
    message = str(info.value)
    assert f"test.7z (inside {outer})" in message and ".partial" not in message, message
    assert files_under(tmp_path / "extracted") == set()


# ---- S3: a refused re-download leaves the catalogue, the folds and the competition record as they were -------------
def _cifar_spec(tmp_path: Path) -> Path:
    """CIFAR-10's layout with its classes read from the labels (``classes_from = "labels"``), as the issue's MY.toml."""
    spec = tmp_path / "my.toml"
    text = builtin_competitions()["cifar-10"].read_text()
    spec.write_text(text.replace('name = "cifar-10"', 'name = "my"').replace(
        text.splitlines()[4], 'classes_from = "labels"'))
    return spec


DATA_FILES = ("train.csv", "test.csv", "folds.csv", "duplicates.csv", "catalog_problems.csv", "competition.json")


def test_s3_a_refused_redownload_leaves_catalogue_folds_and_record_as_they_were(tmp_path):
    data = layouts.cifar10(tmp_path / "files", limit=250)
    spec, data_dir = _cifar_spec(tmp_path), tmp_path / "data"
    download(competition=spec, from_paths=data.files, data_dir=data_dir, progress=False, workers=1)
    before = {name: (data_dir / name).read_bytes() for name in DATA_FILES}
    labels = pd.read_csv(data.files[1])
    labels.loc[0, "label"] = "zebra"  # an 11th class with one photo: 5 folds cannot hold it
    labels.to_csv(data.files[1], index=False)
    out = one_line(invoke("download", "--competition", spec, *[a for f in data.files for a in ("--from", f)],
                          "--data-dir", data_dir, "--no-progress"))
    assert "5 folds need at least 5 photos of every class" in out and "'zebra' (1)" in out
    assert {name: (data_dir / name).read_bytes() for name in DATA_FILES} == before
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]


def test_s3_train_refuses_folds_that_disagree_with_the_catalogue(sample_data, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in ("train.csv", "test.csv", "folds.csv"):
        (data_dir / name).write_bytes((sample_data / name).read_bytes())
    train_csv = pd.read_csv(data_dir / "train.csv")
    train_csv.loc[:9, "label"] = 1 - train_csv.loc[:9, "label"]  # what the old refused download left: new labels
    train_csv.to_csv(data_dir / "train.csv", index=False)
    out = one_line(invoke("train", "--arch", "lenet", "--img-size", "32", "--epochs", "1", "--workers", "0",
                          "--no-progress", "--tracker", "none", "--data-dir", data_dir,
                          "--runs-dir", tmp_path / "runs"))
    assert "folds.csv does not match" in out and "10 photo(s)" in out and "pipeline split" in out, out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---- S4, S9, S10, T8: pixel CSVs -----------------------------------------------------------------------------------
def _digits(tmp_path: Path, limit: int = 250) -> layouts.CompetitionData:
    return layouts.digit_recognizer(tmp_path / "files", limit=limit)


def _download_digits(data: layouts.CompetitionData, data_dir: Path, folds: int = 5) -> dict:
    return download(competition="digit-recognizer", from_paths=data.files, data_dir=data_dir, n_folds=folds,
                    progress=False, workers=1)


def test_s4_a_smaller_redownload_keeps_none_of_the_first_downloads_images(tmp_path):
    data = _digits(tmp_path, limit=500)
    data_dir = tmp_path / "data"
    assert _download_digits(data, data_dir)["train"] == 400
    rows = data.files[0].read_text().splitlines()
    data.files[0].write_text("\n".join(rows[:201]) + "\n")  # the header and 200 rows
    assert _download_digits(data, data_dir)["train"] == 200
    train_csv = pd.read_csv(data_dir / "train.csv")
    assert len(train_csv) == 200 and train_csv.path.map(lambda p: Path(p).name).is_unique
    images = data_dir / "extracted" / "digit-recognizer-images"
    assert len(list(images.rglob("train/*/*.png"))) == 200  # the first download's images are gone
    assert not list(images.glob(".*partial"))


def test_s3_a_refused_pixel_redownload_leaves_the_catalogue_and_its_images_as_they_were(tmp_path):
    data = _digits(tmp_path)
    data_dir = tmp_path / "data"
    _download_digits(data, data_dir)
    before = {name: (data_dir / name).read_bytes() for name in DATA_FILES}
    images = {p: Path(p).read_bytes() for p in pd.read_csv(data_dir / "train.csv").path}
    train = pd.read_csv(data.files[0])
    threes = train.index[train.label == 3]
    train.drop(threes[2:]).to_csv(data.files[0], index=False)  # two photos of "3": 5 folds cannot hold them
    with pytest.raises(DataError, match=r"'3' \(2\)"):
        _download_digits(data, data_dir)
    assert {name: (data_dir / name).read_bytes() for name in DATA_FILES} == before
    assert {p: Path(p).read_bytes() for p in images} == images  # train.csv's photos still there, unchanged


def test_s9_empty_cells_are_left_out_and_listed_and_a_0_1_scale_is_converted(tmp_path, caplog):
    data = _digits(tmp_path)
    train = pd.read_csv(data.files[0])
    train.iloc[3, 1:] = float("nan")  # a row of empty cells
    scaled = train.copy()
    scaled.iloc[:, 1:] = scaled.iloc[:, 1:] / 255
    scaled.to_csv(data.files[0], index=False)
    test = pd.read_csv(data.files[1])
    test.iloc[7, 5] = float("nan")
    (test / 255).to_csv(data.files[1], index=False)
    data_dir = tmp_path / "data"
    summary = _download_digits(data, data_dir)
    assert summary["train"] == len(train) - 1 and summary["test"] == len(test)
    problems = pd.read_csv(data_dir / "catalog_problems.csv")
    assert problems.reason.str.contains("row 4 has empty cells").sum() == 1, problems
    test_csv = pd.read_csv(data_dir / "test.csv")
    assert test_csv.readable.tolist() == [i != 8 for i in test_csv.id]  # its id kept, unreadable: a neutral guess
    assert "holds pixel values from 0 to 1, not 0 to 255: multiplied them by 255" in caplog.text
    first = pd.read_csv(data_dir / "train.csv").path.iloc[0]
    assert np.asarray(Image.open(first)).max() > 200  # not an all-black image


def test_s10_a_label_that_climbs_out_of_the_data_folder_writes_nothing_outside(tmp_path):
    data = _digits(tmp_path)
    train = pd.read_csv(data.files[0], dtype={"label": str})
    train.loc[2, "label"] = "../../../../pwned"
    train.to_csv(data.files[0], index=False)
    outside_before = files_under(tmp_path)
    data_dir = tmp_path / "work" / "data"
    out = one_line(invoke("download", "--competition", "digit-recognizer",
                          *[a for f in data.files for a in ("--from", f)], "--data-dir", data_dir, "--no-progress"))
    assert "row 3 has the label '../../../../pwned', which cannot name a class folder" in out
    written = {p for p in files_under(tmp_path) - outside_before if not p.startswith("work/data")}
    assert written <= {"work"}, written
    assert not (data_dir / "train.csv").exists()
    assert not list((data_dir / "extracted").rglob("*.png"))


def test_s10_a_spec_name_that_climbs_out_writes_nothing_outside(tmp_path):
    data = _digits(tmp_path)
    spec = tmp_path / "work" / "escape.toml"
    spec.parent.mkdir()
    spec.write_text(builtin_competitions()["digit-recognizer"].read_text().replace(
        'name = "digit-recognizer"', 'name = "../../../escaped"'))
    outside_before = files_under(tmp_path)
    data_dir = tmp_path / "work" / "data"
    one_line(invoke("download", "--competition", spec, *[a for f in data.files for a in ("--from", f)],
                    "--data-dir", data_dir, "--no-progress"))
    assert {p for p in files_under(tmp_path) - outside_before if not p.startswith("work/data")} == set()
    assert not (data_dir / "train.csv").exists()


@pytest.mark.parametrize(("change", "expected"), [
    (lambda p: pd.read_csv(p).astype({"pixel0": object}).assign(pixel0=lambda f: f.pixel0.where(f.index != 5, "abc"))
     .to_csv(p, index=False), r"row 6, column 'pixel0' holds 'abc', which is not a pixel value"),
    (lambda p: p.write_text(""), r"train.csv is empty"),
    (lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), r"train.csv holds no rows"),
])
def test_t8_a_non_numeric_cell_and_an_empty_pixel_file_are_one_line(tmp_path, change, expected):
    """Before: TypeError: '>=' not supported ..., and EmptyDataError."""
    data = _digits(tmp_path)
    change(data.files[0])
    with pytest.raises(DataError, match=expected):
        _download_digits(data, tmp_path / "data")
    assert not (tmp_path / "data" / "train.csv").exists()


# ---- S8: an id listed twice in a labels CSV ------------------------------------------------------------------------
def test_s8_an_id_listed_twice_with_different_labels_is_left_out_and_listed(tmp_path, caplog):
    """Before: the last label won, unsaid."""
    data = layouts.cifar10(tmp_path / "files", limit=250)
    labels = pd.read_csv(data.files[1])
    first, second = labels.iloc[0], labels.iloc[1]
    other = next(c for c in layouts.CIFAR10_CLASSES if c != first.label)
    twice = pd.DataFrame({"id": [first.id, second.id], "label": [other, second.label]})
    pd.concat([labels, twice]).to_csv(data.files[1], index=False)
    summary = download(competition="cifar-10", from_paths=data.files, data_dir=tmp_path / "data", progress=False,
                       workers=1)
    assert summary["train"] == len(labels) - 1  # the id with two labels left out; the one listed twice kept once
    train_csv = pd.read_csv(tmp_path / "data" / "train.csv")
    names = train_csv.path.map(lambda p: Path(p).name)
    assert f"{first.id}.png" not in set(names) and (names == f"{second.id}.png").sum() == 1
    problems = pd.read_csv(tmp_path / "data" / "catalog_problems.csv")
    (reason,) = problems.reason[problems.path.str.endswith(f"/train/{first.id}.png")]
    assert f"lists it more than once with different labels ({', '.join(sorted([first.label, other]))})" in reason
    assert "lists 1 id(s) more than once with the same label; each is kept once" in caplog.text
    assert "gives 1 id(s) different labels; they are left out of training" in caplog.text


# ---- S13: a class whose photos all land in one fold ----------------------------------------------------------------
def test_s13_a_class_all_in_one_fold_is_warned_by_name(caplog):
    rng = np.random.default_rng(0)
    hashes = [f"{int(h):016x}" for h in rng.integers(0, 2 ** 63, size=45)]
    same = f"{int(rng.integers(0, 2 ** 63)):016x}"
    train_df = pd.DataFrame({"path": [f"{i}.png" for i in range(50)], "label": [0] * 20 + [1] * 25 + [2] * 5,
                             "phash": hashes + [same] * 5})  # five identical photos of class "c": one group
    folds = assign_folds(train_df, 5, classes=("a", "b", "c"))
    assert folds[folds.label == 2].fold.nunique() == 1
    assert "every photo of class 'c' is in fold" in caplog.text
    assert "class 'a'" not in caplog.text and "class 'b'" not in caplog.text


# ---- T9: one class name in NFC and NFD -----------------------------------------------------------------------------
def test_t9_a_class_folder_in_nfc_and_nfd_is_one_class(tmp_path):
    """Before: two classes that print the same ('Café' composed, and decomposed as macOS zips store it)."""
    train_x, _, test_x, _ = layouts.split(250)
    root = tmp_path / "files"
    folders = {0: unicodedata.normalize("NFC", "Café"), 1: unicodedata.normalize("NFD", "Café")}
    for i, x in enumerate(train_x[:90]):
        name = folders.get(i % 3, "Tea")
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.kron(x, np.ones((4, 4), np.uint8))).convert("RGB").save(root / "train" / name / f"{i}.png")
    (root / "test").mkdir()
    for i, x in enumerate(test_x[:10]):
        Image.fromarray(np.kron(x, np.ones((4, 4), np.uint8))).convert("RGB").save(root / "test" / f"t{i}.png")
    summary = download(competition="plant-seedlings-classification", from_paths=[root], data_dir=tmp_path / "data",
                       progress=False, workers=1)
    assert summary["classes"] == ["Café", "Tea"] and summary["per_class"] == {"Café": 60, "Tea": 30}
    assert unicodedata.is_normalized("NFC", summary["classes"][0])


def test_t9_the_report_never_makes_identifiers_of_class_names():
    """Before: SyntaxError: duplicate argument 'prob_ﬁsh' (a namedtuple over prob_ columns; Python reads 'ﬁ' as
    'fi')."""
    from pipeline.competitions.spec import load_competition
    from pipeline.metrics import most_confident_wrong
    from pipeline.report.run_page import _gallery

    comp = load_competition("cifar-10").with_classes(["fish", "ﬁsh", "tea"])
    columns = comp.prob_columns()
    oof = pd.DataFrame({"path": ["a.png", "b.png"], "fold": [0, 1], "label": [0, 2],
                        columns[0]: [0.1, 0.2], columns[1]: [0.8, 0.1], columns[2]: [0.1, 0.7]})
    html = _gallery(most_confident_wrong(oof, 4, columns), comp)  # the report's one view of the wrong photos
    assert "ﬁsh" in html and "0.800" in html


# ---- S5: --weights of another variant ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def variant_weights(tmp_path_factory) -> Path:
    """mobilenetv3_large_075's weights (created offline, pretrained=False), saved as torch.save writes them."""
    import timm
    import torch

    path = tmp_path_factory.mktemp("weights") / "mobilenetv3_large_075.pth"
    torch.save(timm.create_model("mobilenetv3_large_075", pretrained=False).state_dict(), path)
    return path


def test_s5_weights_of_another_variant_are_refused_naming_tensors(variant_weights):
    """Before: 106 of 312 tensors loaded, the rest re-initialised with an INFO line."""
    from pipeline.errors import ConfigError
    from pipeline.models import build_model

    with pytest.raises(ConfigError, match=r"204 tensors beyond the classifier are missing, unexpected or shaped "
                                          r"otherwise \(e\.g\. blocks\.2\.0\.conv_pwl\.weight, .*add "
                                          r"--weights-partial to load only the 106 of 312 that fit"):
        build_model("mobilenetv3_large_100", 64, weights=variant_weights)


def test_s5_weights_partial_loads_what_fits_and_says_how_many(variant_weights, caplog):
    import torch

    from pipeline.models import build_model

    source = torch.load(variant_weights, weights_only=True)
    model = build_model("mobilenetv3_large_100", 64, weights=variant_weights, weights_partial=True)
    own = model.state_dict()
    kept = [k for k, v in source.items() if k in own and own[k].shape == v.shape]
    assert len(kept) == 106 and all(torch.equal(own[k], source[k]) for k in kept)
    assert f"loaded {len(kept)} of the model's {len(own)} tensors" in caplog.text


def test_s5_train_refuses_another_variants_weights_before_making_a_run(variant_weights, sample_data, tmp_path):
    args = ["train", "--arch", "mobilenetv3_large_100", "--img-size", "64", "--epochs", "1", "--workers", "0",
            "--no-progress", "--tracker", "none", "--data-dir", sample_data, "--runs-dir", tmp_path / "runs",
            "--weights", variant_weights]
    out = one_line(invoke(*args))
    assert "does not fit this architecture" in out and "--weights-partial" in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    out = one_line(invoke(*args[:-2], "--weights-partial"))
    assert "--weights-partial says how to load --weights FILE" in out


# ---- S14, R3: --pseudo ---------------------------------------------------------------------------------------------
@pytest.fixture
def other_project(tiny_run, data_copy, tmp_path, monkeypatch) -> dict:
    """Another project folder (``other/``) whose submission blends the tiny run, made there (its note names the run
    as ``runs/tiny``, relative); the test then works from ``mine/``."""
    import json
    import shutil

    from pipeline.predict.predict import predict

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other / "runs" / "tiny")
    monkeypatch.chdir(other)
    predict(runs=[Path("runs/tiny")], test_csv=data_copy / "test.csv", fmt="redux", runs_dir=Path("runs"),
            out=Path("submissions/x.csv"))
    note = json.loads((other / "submissions" / "x.json").read_text())
    assert note["runs"] == ["runs/tiny"]
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path / "mine")
    p = pd.read_csv(other / "runs" / "tiny" / "test_probs.csv").prob_dog  # the tiny run is unsure: its surer half
    return {"note": Path("../other/submissions/x.json"), "run": other / "runs" / "tiny", "data": data_copy,
            "tta": note["tta"], "threshold": float(np.median(np.maximum(p, 1 - p)))}


def _pseudo(project: dict):
    from pipeline.competitions.spec import load_competition
    from pipeline.data.folds import read_folds
    from pipeline.train.pseudo import pseudo_labels

    return pseudo_labels(project["note"], Path("runs"), project["data"] / "test.csv", load_competition("course"),
                         project["threshold"], read_folds(project["data"]))


def test_r3_s14_a_note_elsewhere_finds_its_runs_and_each_fold_is_labelled_by_its_own_models(other_project):
    """Before: 'its run runs/tiny is gone' (looked up from the current folder); and every fold trained on the
    blend of all folds, whose models had seen that fold's validation photos."""
    from pipeline.train.pseudo import of_fold

    frame, info = _pseudo(other_project)
    assert info["runs"] == ["tiny"] and "leak" not in info and info["labelled_by"].startswith("each fold's own")
    saved = pd.read_csv(other_project["run"] / "test_probs.csv").set_index("id")
    assert set(frame.fold) == {0, 1, 2} and info["per_fold"] == frame.fold.value_counts().sort_index().tolist()
    for k in range(3):
        mine = of_fold(frame, k)
        np.testing.assert_allclose(mine.prob_dog, saved.loc[mine.id, f"fold{k}"])  # fold k's model alone
        assert (np.maximum(mine.prob_dog, 1 - mine.prob_dog) >= other_project["threshold"]).all()


def test_s14_a_source_trained_on_other_folds_is_recorded_as_a_leak(other_project, caplog):
    from pipeline.data.folds import write_folds

    write_folds(other_project["data"], n_folds=3, seed=1)  # the data re-split since the source run trained
    frame, info = _pseudo(other_project)
    assert (frame.fold == -1).all()
    assert "run tiny was trained on other folds than this data's" in info["leak"]
    assert "the out-of-fold scores are optimistic" in info["leak"] and info["leak"] in caplog.text


def test_s14_saved_predictions_of_another_tta_than_the_submissions_are_refused(other_project):
    from pipeline.errors import ConfigError
    from pipeline.predict.inference import predict_run

    other = "none" if other_project["tta"] != "none" else "hflip"
    predict_run(other_project["run"], other_project["data"] / "test.csv", tta=other)  # overwrites test_probs.csv
    with pytest.raises(ConfigError, match=rf"saved test predictions were made with --tta {other}, not the "
                                          rf"submission's {other_project['tta']}"):
        _pseudo(other_project)
