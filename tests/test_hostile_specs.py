"""Issue 27's hostile pass over competition specs, ``pipeline score``, ids and durations (S1, S2, S6, S7, S10, S11,
S12, T1-T5, T10, H1, R1, R2, R4): each case reproduced on real files (sklearn's digits laid out as the
competitions lay them out, tests/competition_data.py), then the right result or one line naming what to change.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.competitions import spec as specs
from pipeline.competitions.spec import (
    Competition,
    builtin_competitions,
    data_competition,
    load_competition,
    record_competition,
)
from pipeline.data.download import download
from pipeline.errors import ConfigError, SubmissionError
from pipeline.fileio import write_csv
from pipeline.predict.formats import csv_text, format_for, make_submission, read_test_ids
from pipeline.predict.validation import write_submission
from pipeline.train.budget import parse_duration
from pipeline.train.session import train
from tests import competition_data as layouts
from tests import mlebench_layouts as mle
from tests.conftest import tiny_config
from tests.test_cli import invoke
from tests.test_hostile import one_line

ROOT = Path(__file__).resolve().parents[1]

# a user's spec over digits: class folders train/<class>/<n>.png, test/<stem>.png; everything else default
DIGITS_SPEC = """\
name = "my-digits"
classes = ["zero", "one"]

[train]
labels = "folder"
images = "**/train/*/*.png"

[test]
images = "**/test/*.png"
id = "stem"

[submission]
columns = ["id", "label"]
label = "class"
sort = "text"
"""


def _spec(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _digit_folders(root: Path, classes: dict[str, int], test_stems: list[str], per_class: int = 6) -> Path:
    """``root/train/<class>/<n>.png`` (real 8x8 digit scans, 32 px) for each class and its digit, and
    ``root/test/<stem>.png``."""
    images, digits, test_images, _ = layouts.split(200)
    for name, digit in classes.items():
        for n, img in enumerate(images[digits == digit][:per_class]):
            path = root / "train" / name / f"{n}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).resize((32, 32)).save(path)
    (root / "test").mkdir(parents=True, exist_ok=True)
    for stem, img in zip(test_stems, test_images, strict=False):
        Image.fromarray(img).resize((32, 32)).save(root / "test" / f"{stem}.png")
    return root


def _cactus_spec(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = builtin_competitions()["aerial-cactus-identification"].read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return _spec(tmp_path, text, "cactus.toml")


# ---- S1: a binary spec whose positive class is listed first -------------------------------------------------------
@pytest.mark.parametrize("classes", ['classes = ["0", "1"]', 'classes_from = "labels"'])
def test_a_positive_class_listed_first_is_label_1_so_the_one_output_is_its_probability(classes, tmp_path):
    """Before: labels were indices into the classes as listed, so the one logit was P("1") while the file's
    column was written as P("0"): every submission inverted."""
    data = layouts.aerial_cactus(tmp_path / "files", limit=100)
    spec = _cactus_spec(tmp_path, ('positive = "1"', 'positive = "0"'), ('classes = ["0", "1"]', classes))
    download(competition=spec, from_paths=data.files, data_dir=tmp_path / "data", progress=False, workers=1,
             n_folds=2)
    comp = data_competition(tmp_path / "data")
    assert comp.classes == ("1", "0") and comp.positive == "0" and comp.prob_columns() == ["prob_0"]
    train = pd.read_csv(tmp_path / "data" / "train.csv")
    truth = dict(zip(data.train.id, data.train.label, strict=True))
    given = train.path.map(lambda p: truth[Path(p).name])
    assert (train.label[given == "0"] == 1).all() and (train.label[given == "1"] == 0).all()
    # the probability written is P(positive), the model's one output
    sub = make_submission(pd.DataFrame({"id": ["a.jpg"], "prob_0": [0.9]}), format_for(comp))
    assert sub.to_dict("list") == {"id": ["a.jpg"], "has_cactus": [0.9]}


def test_two_class_probabilities_write_both_columns_in_class_order():
    comp = load_competition("aerial-cactus-identification")
    sub = dataclasses.replace(comp.submission, label="probabilities", columns=("id",), positive=None)
    fmt = format_for(dataclasses.replace(comp, submission=sub))
    written = make_submission(pd.DataFrame({"id": ["a.jpg"], "prob_1": [0.75]}), fmt, eps=0)
    assert written.to_dict("list") == {"id": ["a.jpg"], "0": [0.25], "1": [0.75]}


# ---- S2: a two-class label kind over more classes ------------------------------------------------------------------
def test_a_two_class_label_kind_with_ten_classes_from_the_labels_is_refused_before_anything_is_written(tmp_path):
    """Before: the two-class check ran only when the spec listed its classes; this wrote P(first class)."""
    data = layouts.dog_breed(tmp_path / "files", limit=100)
    text = builtin_competitions()["dog-breed-identification"].read_text()
    spec = _spec(tmp_path, text.replace('columns = ["id"]', 'columns = ["id", "breed"]')
                 .replace('label = "probabilities"', 'label = "probability"'))
    r = invoke("download", "--competition", spec, *[a for f in data.files for a in ("--from", f)], "--data-dir",
               tmp_path / "data", "--no-progress", "--folds", "2")
    out = one_line(r)
    assert "submission.label 'probability' is for two classes, and this competition has 10" in out
    assert not any((tmp_path / "data" / n).exists() for n in ("train.csv", "test.csv", "competition.json"))
    # a record written before the check: predict, validate and submit refuse its format in one line
    comp = load_competition("dog-breed-identification").with_classes(layouts.DOG_BREEDS)
    comp = dataclasses.replace(comp, submission=dataclasses.replace(comp.submission, label="probability",
                                                                    columns=("id", "breed")))
    with pytest.raises(SubmissionError, match="'probability' label per image, which is for two classes, but it has 10"):
        format_for(comp)


# ---- S6, S7, T3, T4: every field of the kind it must be -----------------------------------------------------------
def _wrong_value(hint) -> object:
    """A value of the wrong kind for a field of type ``hint``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # str | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        return "no"
    if hint is str:
        return ["x"]
    if hint is int:
        return "28"
    if hint is float:
        return "1.5"
    if typing.get_origin(hint) is tuple:
        return "x"
    return "abc"  # sha256: a table


PARTS = {"target": specs.Target, "train": specs.TrainLayout, "test": specs.TestLayout,
         "submission": specs.SubmissionLayout, "augment": specs.Augment}
DATA = ("kaggle", "urls", "sha256")


def _every_field() -> list[tuple[str | None, str, object]]:
    """(table, field, a value of the wrong kind) for every field a spec can hold."""
    hints = typing.get_type_hints(Competition)
    out = [("data" if f.name in DATA else None, f.name, _wrong_value(hints[f.name]))
           for f in dataclasses.fields(Competition) if f.name not in PARTS]
    for part, cls in PARTS.items():
        hints = typing.get_type_hints(cls)
        out += [(part, f.name, _wrong_value(hints[f.name])) for f in dataclasses.fields(cls)]
    return out


@pytest.mark.parametrize(("part", "key", "value"), _every_field(), ids=lambda v: str(v))
def test_every_spec_field_of_the_wrong_kind_is_one_line_naming_it(part, key, value, tmp_path):
    """Before: ``hflip = "no"`` was true, ``columns = "id"`` the header ``i,d``, ``tta = ["none"]`` and
    ``sha256 = "abc"`` tracebacks."""
    line = f"{key} = {json.dumps(value)}"  # TOML reads these JSON strings, lists and booleans alike
    top = "\n".join(line for k, line in (("name", 'name = "my-digits"'), ("classes", 'classes = ["zero", "one"]'))
                    if part is not None or k != key)
    spec = _spec(tmp_path, f"{top}\n{line}\n" if part is None else f"{top}\n[{part}]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_competition(spec)
    where = f"{part}.{key}" if part else key
    message = str(info.value)
    assert message.startswith(f"Competition spec {spec}: field {where} must be ") and "\n" not in message
    assert f"got {value!r}" in message


@pytest.mark.parametrize(("change", "said"), [
    (('columns = ["id", "label"]', 'columns = "id"'),
     'field submission.columns must be a list of strings (e.g. ["a", "b"]), got \'id\' (a string)'),
    (('classes = ["zero", "one"]', 'classes = "zero"'), "field classes must be a list of strings"),
    (("", '[augment]\nhflip = "no"'), "field augment.hflip must be true or false, got 'no' (a string)"),
    (("", '[data]\nurls = "http://example.com/a.zip"'), "field data.urls must be a list of strings"),
    (("", '[augment]\ntta = ["none"]'), "field augment.tta must be a string, got ['none'] (a list)"),
    (("", '[data]\nsha256 = "abc"'),
     "field data.sha256 must be a table of file name = SHA-256 (64 hex digits), got 'abc' (a string)"),
    (("", '[data]\nsha256 = {"train.zip" = "abc"}'), "field data.sha256 must be a table of file name = SHA-256"),
])
def test_the_reported_wrong_kinds_are_one_line_at_download_and_nothing_is_written(change, said, tmp_path):
    old, new = change
    spec = _spec(tmp_path, DIGITS_SPEC.replace(old, new) if old else DIGITS_SPEC + new + "\n")
    assert spec.read_text() != DIGITS_SPEC
    out = one_line(invoke("download", "--competition", spec, "--from", tmp_path, "--data-dir", tmp_path / "data"))
    assert said in out and str(spec) in out
    assert not (tmp_path / "data").exists()


# ---- T5: train.file templates --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("template", "said"), [
    ("{id}.{ext}", "{ext} is not {id}"), ("{0}.png", "{0} is not {id}"), ("{id:05d}.png", "{id:05d} is not {id}"),
    ("{id!r}.png", "{id!r} is not {id}"), ("{id.png", "unbalanced braces"), ("train.png", "got 'train.png'"),
    ("sub/{id}.png", "got 'sub/{id}.png'"),
])
def test_a_file_template_other_than_id_is_one_line_at_spec_load(template, said, tmp_path):
    """Before: KeyError, IndexError and ValueError tracebacks in the middle of the download."""
    spec = _cactus_spec(tmp_path, ('file = "{id}"', f'file = "{template}"'))
    with pytest.raises(ConfigError) as info:
        load_competition(spec)
    assert "field train.file must be a file name made from the labels file's id, such as '{id}.png'" in str(info.value)
    assert said in str(info.value)


def test_a_plain_id_template_still_works():
    assert load_competition("cifar-10").train.file == "{id}.png"
    assert load_competition("aerial-cactus-identification").train.file == "{id}"


# ---- S10: a spec's name cannot lead out of the data folder ---------------------------------------------------------
@pytest.mark.parametrize("name", ["../../../escaped", "a/b", "..", ".hidden", "x\\y", "a..b", ""])
def test_a_spec_name_that_is_no_plain_slug_is_refused(name, tmp_path):
    """Before: ``name = "../../../escaped"`` wrote ``escaped-images/`` outside the data folder (pixel specs)."""
    spec = _spec(tmp_path, builtin_competitions()["digit-recognizer"].read_text().replace(
        'name = "digit-recognizer"', f"name = {json.dumps(name)}"))
    with pytest.raises(ConfigError, match="field 'name' (must be a short name of letters, digits|is missing)"):
        load_competition(spec)


def test_an_escaping_pixel_spec_writes_nothing_outside_the_data_folder(tmp_path):
    data = layouts.digit_recognizer(tmp_path / "work" / "files", limit=100)
    spec = _spec(tmp_path, builtin_competitions()["digit-recognizer"].read_text().replace(
        'name = "digit-recognizer"', 'name = "../../../escaped"'))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = invoke("download", "--competition", spec, *[a for f in data.files for a in ("--from", f)], "--data-dir",
               tmp_path / "work" / "a" / "data")
    assert "field 'name' must be a short name" in one_line(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.rglob("escaped*"))


# ---- S11: class names and view names apart -------------------------------------------------------------------------
def test_a_class_name_with_the_view_mark_is_refused_in_a_spec_and_in_the_data(tmp_path):
    """Before: classes ``x`` and ``x@zoom`` shared the column ``prob_x@zoom``; out-of-fold rows summed to 0.96-1.02."""
    spec = _spec(tmp_path, DIGITS_SPEC.replace('["zero", "one"]', '["x", "x@zoom"]'))
    with pytest.raises(ConfigError, match=r"field 'classes' holds 'x@zoom': class names cannot contain '@'"):
        load_competition(spec)
    folders = _digit_folders(tmp_path / "files", {"x": 0, "x@zoom": 1, "y": 2}, ["1", "2"])
    spec = _spec(tmp_path, DIGITS_SPEC.replace('classes = ["zero", "one"]', 'classes_from = "folders"'))
    r = invoke("download", "--competition", spec, "--from", folders, "--data-dir", tmp_path / "data", "--folds", "2",
               "--no-progress")
    assert "holds 'x@zoom': class names cannot contain '@'" in one_line(r)
    assert "the classes found in the data: 'x', 'x@zoom', 'y'" in r.output
    assert not (tmp_path / "data" / "train.csv").exists()


def test_the_cats_and_dogs_prediction_columns_are_unchanged():
    comp = load_competition("course")
    assert comp.prob_columns() == ["prob_dog"] and comp.prob_columns("hflip") == ["prob_dog@hflip"]
    assert load_competition("cifar-10").prob_columns("zoom")[:2] == ["prob_airplane@zoom", "prob_automobile@zoom"]


# ---- S12: --time-limit 1h30 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [("1h30", 5400), ("2m30", 150), ("1h30m", 5400), ("90s", 90),
                                               ("30m", 1800), ("2h", 7200), ("90", 90), ("1h30s", 3630)])
def test_a_bare_number_after_the_hours_is_minutes(text, seconds):
    """Before: ``1h30`` was read as 1 h 30 s (3630 s)."""
    assert parse_duration(text) == seconds


# ---- T1, T2, R2: pipeline score ------------------------------------------------------------------------------------
def _scored_data(tmp_path: Path, name: str):
    """A data folder recording competition ``name`` with its classes, the truth and a perfect submission."""
    builders = {**mle.MLEBENCH, "cifar-10": layouts.cifar10, "digit-recognizer": layouts.digit_recognizer,
                "dog-breed-identification": layouts.dog_breed, "plant-seedlings-classification":
                layouts.plant_seedlings, "aerial-cactus-identification": layouts.aerial_cactus}
    if name in builders:
        data = builders[name](tmp_path / "files", limit=60)
        classes, truth = data.classes, data.truth
    else:  # the cats-and-dogs specs
        classes = ["cat", "dog"]
        truth = pd.DataFrame({"id": list(range(6)), "label": ["cat", "dog", "dog", "cat", "dog", "cat"]})
    comp = load_competition(name).with_classes(classes) if load_competition(name).classes is None else \
        load_competition(name)
    record_competition(tmp_path / "data", comp)
    fmt = format_for(comp)
    onehot = np.eye(len(comp.classes))[[comp.classes.index(c) for c in truth.label]]
    probs = pd.DataFrame({"id": truth.id, **{c: onehot[:, i] for i, c in enumerate(comp.classes)}})
    probs = probs[["id", comp.classes[1]]] if comp.binary else probs
    probs.columns = ["id", *comp.prob_columns()]
    sub = tmp_path / "sub.csv"
    sub.write_text(csv_text(make_submission(probs, fmt, eps=0)))
    return comp, fmt, truth, sub


def _own_solution(comp: Competition, fmt, truth: pd.DataFrame) -> pd.DataFrame:
    """The truth in the competition's own submission format (what a Kaggle solution file holds)."""
    if fmt.label == "probabilities":
        return pd.concat([truth[["id"]], pd.get_dummies(truth.label).reindex(columns=list(comp.classes),
                                                                                  fill_value=0).astype(int)], axis=1)
    labels = truth.label if fmt.label == "class" else (truth.label == comp.positive).astype(int)
    return pd.DataFrame({fmt.header[0]: truth.id, fmt.header[1]: labels})


# the single-label competitions (the other target kinds' submissions are scored by their own kinds' code)
@pytest.mark.parametrize("name", [n for n in builtin_competitions() if load_competition(n).target.kind == "single"])
def test_score_works_for_every_built_in_competition_with_either_solution(name, tmp_path):
    """Before: AttributeError 'label_true' for the four competitions whose label column is not ``label``."""
    comp, fmt, truth, sub = _scored_data(tmp_path, name)
    own = _own_solution(comp, fmt, truth)
    for which, solution in (("id,label", truth), ("own", own), ("Kaggle's", own.assign(Usage="Public"))):
        path = tmp_path / f"solution-{which}.csv"
        write_csv(path, solution)
        r = invoke("score", sub, path, "--test", tmp_path / "data" / "test.csv")
        assert r.exit_code == 0 and "Traceback" not in r.output, (which, r.output)
        assert f"accuracy 1.0000 on {len(truth)} images" in r.output, (which, r.output)
        if comp.metric == "roc_auc":
            assert "ROC-AUC 1.0000" in r.output


@pytest.mark.parametrize(("name", "edit", "said"), [
    ("digit-recognizer", lambda s: s.assign(Label=s.Label.astype(str).replace({"3": "eleven"})),
     "label(s) are not classes of digit-recognizer (0, 1, 2, 3, 4 and 5 more): 'eleven'"),
    ("digit-recognizer", lambda s: s.assign(ImageId=s.ImageId.astype(str).replace({"1": "one"})),
     "id(s) are not whole numbers: 'one'"),
    ("digit-recognizer", lambda s: s.rename(columns={"Label": "Digit"}),
     "has the header 'ImageId,Digit'; it must be id,label (the true class of each id) or the competition's own "
     "ImageId,Label"),
    ("dog-breed-identification", lambda s: s.assign(affenpinscher=1),
     "row(s) are not one 1 and 0 elsewhere"),
    ("dog-breed-identification", lambda s: s.assign(basenji="x"), "row(s) are not one 1 and 0 elsewhere"),
    ("cifar-10", lambda s: pd.concat([s, s.head(1)]), "lists id(s) more than once: 1"),
])
def test_a_malformed_solution_is_one_line(name, edit, said, tmp_path):
    """Before: ``'eleven' is not in list``, ``invalid literal for int()`` tracebacks."""
    comp, fmt, truth, sub = _scored_data(tmp_path, name)
    path = tmp_path / "solution.csv"
    write_csv(path, edit(_own_solution(comp, fmt, truth)))
    out = one_line(invoke("score", sub, path, "--test", tmp_path / "data" / "test.csv"))
    assert said in out


def test_a_users_cat_and_dog_spec_is_scored_by_its_own_format_not_as_redux(tmp_path):
    """Before: classes cat and dog made `score` judge the file as Dogs vs. Cats Redux (probabilities)."""
    spec = _spec(tmp_path, DIGITS_SPEC.replace('["zero", "one"]', '["cat", "dog"]')
                 .replace('columns = ["id", "label"]', 'columns = ["image", "animal"]'))
    record_competition(tmp_path / "data", load_competition(spec))
    sub = _spec(tmp_path, "image,animal\na,cat\nb,dog\nc,dog\nd,cat\n", "sub.csv")
    solution = _spec(tmp_path, "id,label\na,cat\nb,dog\nc,cat\nd,cat\n", "solution.csv")
    r = invoke("score", sub, solution, "--test", tmp_path / "data" / "test.csv")
    assert r.exit_code == 0, r.output
    assert "accuracy 0.7500 on 4 images, macro F1 0.7333" in r.output


# ---- T10: predict --batch-size -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["-1", "0"])
def test_a_batch_size_below_one_is_one_line(size, tmp_path):
    """Before: -1 was a ValueError from the DataLoader and 0 silently the default."""
    out = one_line(invoke("predict", "--batch-size", size, "--runs-dir", tmp_path / "runs", "--no-progress"))
    assert f"--batch-size must be 1 or more images, got {size}" in out


# ---- H1: a glob with many **/ --------------------------------------------------------------------------------------
def test_a_glob_with_many_double_stars_returns_at_once(tmp_path):
    """Before: the glob became a backtracking regular expression; 16 ``**/`` over a path 14 folders deep took
    minutes per file. The download runs in a subprocess that is stopped after two minutes."""
    deep = tmp_path / "files" / Path(*[f"d{i}" for i in range(14)])
    _digit_folders(deep, {"zero": 0, "one": 1}, ["1", "2", "3"])
    spec = _spec(tmp_path, DIGITS_SPEC.replace('images = "**/train/*/*.png"',
                                               f'images = "{"**/" * 16 + "*.jpgx"}"'))
    try:
        done = subprocess.run([sys.executable, "-m", "pipeline", "download", "--competition", str(spec), "--from",
                               str(tmp_path / "files"), "--data-dir", str(tmp_path / "data"), "--no-progress"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the download was still matching the glob after two minutes")
    assert done.returncode == 1 and "No labelled training photo" in done.stderr + done.stdout, done.stderr


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("**/train/*.jpg", "train/1.jpg", True), ("**/train/*.jpg", "a/b/train/1.jpg", True),
    ("**/train/*.jpg", "a/train/x/1.jpg", False), ("**/*", "a/b", True), ("*.png", "a/1.png", False),
    ("**", "a/b/c.png", True), ("?.png", "1.png", True), ("?.png", "12.png", False), ("a/**/b", "a/b", True),
    ("**/" * 16 + "*.jpgx", "d/" * 40 + "x.jpg", False), ("**/a*" * 12 + "x", "a/" * 30 + "a" * 300, False),
])
def test_the_linear_glob_matches_as_the_patterns_read(pattern, path, matches):
    from pipeline.competitions.globs import Glob

    glob = Glob.of(pattern)
    assert glob.match(path) is matches
    assert glob.match_states(path) is matches  # the linear way, which globs with more than two stars take


# ---- R1: ids as text -----------------------------------------------------------------------------------------------
def test_a_test_file_named_nan_and_a_stem_with_a_leading_space_are_ids_like_any_other(tmp_path):
    """Before: ``NaN.png`` was read back as a missing id ("lists an empty or a repeated id; rebuild it") and a
    stem with a leading space made predict refuse its own file."""
    from pipeline.predict.inference import read_test_probs
    from pipeline.rundir import RunDir

    folders = _digit_folders(tmp_path / "files", {"zero": 0, "one": 1}, ["NaN", " 7", "007", "null"])
    download(competition=_spec(tmp_path, DIGITS_SPEC), from_paths=[folders], data_dir=tmp_path / "data",
             progress=False, workers=1, n_folds=2)
    ids = read_test_ids(tmp_path / "data" / "test.csv", numeric=False)
    ids_in_catalogue = pd.read_csv(tmp_path / "data" / "test.csv", dtype=str, keep_default_na=False).id.tolist()
    assert ids == sorted(["NaN", " 7", "007", "null"])
    fmt = format_for(data_competition(tmp_path / "data"))
    sub = make_submission(pd.DataFrame({"id": ids, "prob_one": [0.1, 0.9, 0.2, 0.8]}), fmt)
    path = write_submission(sub, tmp_path / "sub.csv", ids, fmt)
    assert pd.read_csv(path, dtype=str, keep_default_na=False).id.tolist() == sorted(ids)
    # a real run predicts them, saves them and reuses its saved predictions (as --pseudo reads them)
    train(tiny_config(tmp_path / "data", tmp_path / "runs", run_name="r", epochs=1, folds=[0]))
    for _ in range(2):
        r = invoke("predict", "--test", tmp_path / "data" / "test.csv", "--runs-dir", tmp_path / "runs", "--out",
                   tmp_path / "predicted.csv", "--force", "--tta", "none", "--no-progress")
        assert r.exit_code == 0, r.output
        assert sorted(pd.read_csv(tmp_path / "predicted.csv", dtype=str, keep_default_na=False).id) == ids
    assert read_test_probs(RunDir(tmp_path / "runs" / "r")).id.tolist() == sorted(ids, key=ids_in_catalogue.index)


# ---- R4: submit with no Kaggle slug --------------------------------------------------------------------------------
def test_submit_for_a_spec_without_a_kaggle_slug_says_so(tmp_path):
    """Before: it said to upload the file "on the course site"."""
    record_competition(tmp_path / "data", load_competition(_spec(tmp_path, DIGITS_SPEC)))
    write_csv(tmp_path / "data" / "test.csv", pd.DataFrame({"id": ["a", "b"], "path": ["a.png", "b.png"]}))
    sub = _spec(tmp_path, "id,label\na,zero\nb,one\n", "sub.csv")
    r = invoke("submit", sub, "--test", tmp_path / "data" / "test.csv", "--log", tmp_path / "log.csv")
    assert r.exit_code == 0, r.output
    assert "competition my-digits's spec names no Kaggle slug ([data] kaggle), so upload it by hand on the " \
           "competition's site" in " ".join(r.output.split())
    assert "course" not in r.output
