"""Every target kind end to end (issue 29): scikit-learn's real handwritten digits laid out as a user's own spec of
each kind (multi-label from 0/1 columns and from space-separated names, ordinal grades, a Pawpularity-like number,
top-5 identities with a "new" class), downloaded from a local folder, a short LeNet training, predict, and the
written file read back independently: its format checked cell by cell and its metric computed here with
scikit-learn (or by hand for MAP@5), asserted well above chance.

The targets are fixed functions of the digit d: labels {even, big (d >= 5), round (0, 6, 8, 9), prime}; grade d // 2
(0-4); Pawpularity 8 + 9 d (8-89, in [1, 100]); identity "w<d>" with every 0 a "new_whale".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, mean_squared_error, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

from pipeline.competitions.spec import data_competition
from pipeline.data.download import download
from pipeline.train.session import train
from tests import competition_data as layouts
from tests.conftest import tiny_config
from tests.test_cli import invoke

LABELS = {"even": lambda d: d % 2 == 0, "big": lambda d: d >= 5, "round": lambda d: d in (0, 6, 8, 9),
          "prime": lambda d: d in (2, 3, 5, 7)}


def _names(d: int) -> list[str]:
    return [n for n, f in LABELS.items() if f(d)]


def _identity(d: int) -> str:
    return "new_whale" if d == 0 else f"w{d}"


# the spec of each kind, and how its training labels file's label column(s) are made from a digit
COMMON = """
[train]
labels = "csv"
images = "**/train/*.png"
csv = "train.csv"
id_column = "image_id"
label_column = "{column}"
file = "{{id}}.png"

[test]
images = "**/test/*.png"
id = "stem"

[augment]
hflip = false
tta = "none"
"""
KINDS = {
    "multilabel-columns": ("""name = "digits-columns"
metric = "mean_roc_auc"
[target]
kind = "multilabel"
columns = ["even", "big", "round", "prime"]
[submission]
columns = ["image_id", "even", "big", "round", "prime"]
label = "columns"
sort = "text"
""", "even", lambda d: {n: int(f(d)) for n, f in LABELS.items()}),
    "multilabel-names": ("""name = "digits-names"
metric = "f1_micro"
[target]
kind = "multilabel"
separator = " "
[submission]
columns = ["image_id", "labels"]
label = "names"
sort = "text"
""", "labels", lambda d: {"labels": " ".join(_names(d))}),
    "ordinal": ("""name = "digits-grades"
metric = "qwk"
[target]
kind = "ordinal"
grades = 5
[submission]
columns = ["image_id", "diagnosis"]
label = "integer"
sort = "text"
""", "diagnosis", lambda d: {"diagnosis": d // 2}),
    "regression": ("""name = "digits-pawpularity"
metric = "rmse"
[target]
kind = "regression"
low = 1
high = 100
[submission]
columns = ["image_id", "Pawpularity"]
label = "number"
sort = "text"
""", "Pawpularity", lambda d: {"Pawpularity": 8 + 9 * d}),
    "topk": ("""name = "digits-whales"
metric = "map_at_k"
classes_from = "labels"
[target]
kind = "topk"
k = 5
new = "new_whale"
[submission]
columns = ["image_id", "Id"]
label = "names"
sort = "text"
""", "Id", lambda d: {"Id": _identity(d)}),
}


def write_layout(root: Path, kind: str) -> tuple[Path, Path, pd.DataFrame]:
    """The digits as a user's competition of ``kind``: ``files/train/<id>.png``, ``files/test/<id>.png``,
    ``files/train.csv`` (image_id and the kind's label column(s)), and its spec; returns the spec, the files folder
    and the held-out truth (image_id, digit)."""
    spec_text, column, make = KINDS[kind]
    tr_x, tr_y, te_x, te_y = layouts.split()
    files = root / "files"
    for part, xs in (("train", tr_x), ("test", te_x)):
        (files / part).mkdir(parents=True)
        for i, x in enumerate(xs):
            layouts._picture(x, 28, False, i).save(files / part / f"{part[:2]}{i:04d}.png")
    pd.DataFrame([{"image_id": f"tr{i:04d}", **make(int(d))} for i, d in enumerate(tr_y)]).to_csv(
        files / "train.csv", index=False)
    spec = root / f"{kind}.toml"
    spec.write_text(spec_text + COMMON.format(column=column))
    truth = pd.DataFrame({"image_id": [f"te{i:04d}" for i in range(len(te_y))], "digit": te_y})
    return spec, files, truth


def _map5(truth: list[str], rows: list[list[str]]) -> float:
    return float(np.mean([1 / (r[:5].index(t) + 1) if t in r[:5] else 0.0 for t, r in zip(truth, rows, strict=True)]))


def check_file(kind: str, sub: pd.DataFrame, truth: pd.DataFrame) -> float:
    """The file's format checked cell by cell, and its metric computed here, independently of the pipeline."""
    sub = sub.set_index("image_id").loc[truth.image_id]  # every test id, once
    digits = truth.digit.to_numpy()
    if kind == "multilabel-columns":
        values = sub[list(LABELS)].to_numpy(float)
        assert ((values >= 0) & (values <= 1)).all()
        return float(np.mean([roc_auc_score([LABELS[n](d) for d in digits], sub[n]) for n in LABELS]))
    if kind == "multilabel-names":
        predicted = sub["labels"].str.split(" ").tolist()
        assert all(set(p) <= set(LABELS) and p for p in predicted)
        binarizer = MultiLabelBinarizer().fit([list(LABELS)])
        return float(f1_score(binarizer.transform([_names(d) for d in digits]), binarizer.transform(predicted),
                              average="micro"))
    if kind == "ordinal":
        assert sub.diagnosis.str.fullmatch("[0-4]").all()  # whole grades: the grader refuses 2.3
        return float(cohen_kappa_score(digits // 2, sub.diagnosis.astype(int), weights="quadratic"))
    if kind == "regression":
        values = sub.Pawpularity.astype(float)
        assert values.between(1, 100).all()
        return float(np.sqrt(mean_squared_error(8 + 9 * digits, values)))
    rows = sub.Id.str.split(" ").tolist()
    assert all(1 <= len(r) <= 5 and len(set(r)) == len(r) for r in rows)
    assert {n for r in rows for n in r} <= {_identity(d) for d in range(10)}
    return _map5([_identity(d) for d in digits], rows)


# measured once on this machine (seed 0, 3 epochs on fold 0, loaded 2-core CPU): see /work/notes/kinds.md; the
# floors sit well above chance (ROC-AUC 0.5, micro F1 of guessing two labels ~0.5, kappa 0, RMSE of the mean ~26,
# MAP@5 of a fixed guess ~0.46) and below what was measured
FLOORS = {"multilabel-columns": 0.85, "multilabel-names": 0.7, "ordinal": 0.7, "regression": 17.0, "topk": 0.6}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_target_kind_trains_predicts_and_writes_a_well_scored_file(kind, tmp_path):
    spec, files, truth = write_layout(tmp_path, kind)
    data_dir, runs = tmp_path / "data", tmp_path / "runs"
    download(competition=spec, from_paths=[files], data_dir=data_dir, progress=False, workers=1)
    comp = data_competition(data_dir)
    assert comp.target.kind == kind.split("-")[0]
    cv = train(tiny_config(data_dir, runs, run_name="short", epochs=3, folds=[0]))
    assert next(iter(cv["overall"])) == comp.metric  # the competition's metric first
    epochs = pd.read_csv(runs / "short" / "metrics.csv")
    assert epochs.val_metric.notna().all()  # every epoch row holds the metric it was chosen on
    out = tmp_path / "submission.csv"
    r = invoke("predict", "--test", data_dir / "test.csv", "--runs-dir", runs, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    got = check_file(kind, pd.read_csv(out, dtype=str, keep_default_na=False), truth)
    floor = FLOORS[kind]
    assert got <= floor if kind == "regression" else got >= floor, got
    note = json.loads(out.with_suffix(".json").read_text())
    if kind in ("multilabel-names", "ordinal", "topk"):  # thresholds, cut points, the new class's threshold
        fitted = note["fitted"]
        assert fitted["metric"] == comp.metric and fitted["oof_metric_after"] >= fitted["oof_metric_before"]
    r = invoke("validate", out, "--test", data_dir / "test.csv")
    assert r.exit_code == 0, r.output
