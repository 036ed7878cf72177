"""The commands as a user types them (typer's CliRunner), and the demo through the installed entry point."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.runs import _duration
from tests.conftest import SAMPLE
from tests.images import sample_jpeg

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's project folder after `download` and a tiny `train` (shared by this module's tests)."""
    wd = tmp_path_factory.mktemp("user")
    mp = pytest.MonkeyPatch()
    mp.chdir(wd)
    r = invoke("download", "--from", SAMPLE / "train.zip", "--from", SAMPLE / "test.zip", "--folds", "3",
               "--no-progress")
    assert r.exit_code == 0, r.output
    assert "600 images (300 cats, 300 dogs)" in r.output
    r = invoke("train", "--arch", "lenet", "--img-size", "32", "--epochs", "2", "--workers", "0",
               "--run-name", "cli", "--no-progress")
    assert r.exit_code == 0, r.output
    yield wd
    mp.undo()


def test_download_writes_catalogue_and_folds(workdir):
    train, test = pd.read_csv(workdir / "data/train.csv"), pd.read_csv(workdir / "data/test.csv")
    folds = pd.read_csv(workdir / "data/folds.csv")
    assert len(train) == 600 and train.label.sum() == 300
    assert test.id.tolist() == list(range(100))
    assert sorted(folds.fold.unique()) == [0, 1, 2]


def test_split_rebuilds_folds(workdir, tmp_path):
    data = tmp_path / "data"  # a private data folder: the module's shared one stays as the other tests expect
    data.mkdir()
    shutil.copy(workdir / "data/train.csv", data / "train.csv")
    r = invoke("split", "--folds", "4", "--seed", "3", "--data-dir", data)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("600 images in 4 folds") and str(data / "folds.csv") in r.output
    assert sorted(pd.read_csv(data / "folds.csv").fold.unique()) == [0, 1, 2, 3]
    assert sorted(pd.read_csv(workdir / "data/folds.csv").fold.unique()) == [0, 1, 2]


@pytest.mark.parametrize("extra, counts", [
    ({}, "3 image files: 3 test photos (numeric names), 0 unlabelled, 0 unreadable"),
    ({"train/holiday.jpg": sample_jpeg(3), "train/cat.9.jpg": sample_jpeg(4)[:500]},
     "5 image files: 3 test photos (numeric names), 1 unlabelled, 1 unreadable"),
], ids=["only-numeric-names", "numeric-unlabelled-and-unreadable"])
def test_download_with_no_labelled_training_photo_is_one_line_and_keeps_the_catalogue(data_copy, tmp_path,
                                                                                      extra, counts):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            z.writestr(f"test/{i}.jpg", sample_jpeg(i))
        for name, data in extra.items():
            z.writestr(name, data)
    before = {n: (data_copy / n).read_bytes() for n in ("train.csv", "test.csv", "folds.csv")}
    r = invoke("download", "--from", archive, "--data-dir", data_copy, "--no-progress")
    assert r.exit_code == 1 and "Traceback" not in r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith("error: No labelled training photo among the " + counts)
    assert "cat.<n>.jpg / dog.<n>.jpg or sit in cats/ and dogs/ folders" in line
    assert str(data_copy / "catalog_problems.csv") in line
    assert {n: (data_copy / n).read_bytes() for n in before} == before  # the good catalogue is left alone
    assert len(pd.read_csv(data_copy / "catalog_problems.csv")) == len(extra)


def test_download_counts_an_unreadable_test_photo_as_kept(tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2):
            z.writestr(f"train/cat.{i}.jpg", sample_jpeg(i))
            z.writestr(f"train/dog.{i}.jpg", sample_jpeg(i, "dog"))
        z.writestr("test/1.jpg", sample_jpeg(1))
        z.writestr("test/2.jpg", sample_jpeg(2)[:600])  # truncated
    r = invoke("download", "--from", archive, "--data-dir", tmp_path / "data", "--folds", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "test:  2 images" in r.output and "test:  1 of them unreadable: kept (readable=False)" in r.output
    assert "left out" not in r.output
    assert pd.read_csv(tmp_path / "data" / "test.csv").readable.tolist() == [True, False]


def test_train_prints_cv_and_writes_the_run(workdir):
    run_dir = workdir / "runs" / "cli"
    assert (run_dir / "cv.json").exists() and (run_dir / "report" / "report.html").exists()
    r = invoke("runs", "--runs-dir", workdir / "runs")
    assert r.exit_code == 0 and "cli" in r.output


def test_predict_validate_score(workdir):
    out = workdir / "submissions" / "first.csv"
    r = invoke("predict", "--run", "cli", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["id", "label"] and sub.id.tolist() == list(range(100))
    assert set(sub.label) <= {0, 1}
    assert invoke("validate", out, "--test", workdir / "data/test.csv").exit_code == 0
    r = invoke("score", out, SAMPLE / "solution.csv")
    assert r.exit_code == 0 and "accuracy" in r.output and "on 100 images" in r.output
    again = invoke("predict", "--run", "cli", "--out", out, "--no-progress")
    assert again.exit_code == 1 and "--force" in again.output
    assert invoke("predict", "--run", "cli", "--out", out, "--force", "--format", "redux",
                  "--no-progress").exit_code == 0
    assert pd.read_csv(out).label.between(0.005, 0.995).all()


def test_validate_lists_the_problems(workdir):
    bad = workdir / "bad.csv"
    bad.write_text("id,label\n0,1\n0,1\n1,2\n")
    r = invoke("validate", bad, "--test", workdir / "data/test.csv")
    assert r.exit_code == 1
    assert "invalid" in r.output and "more than once: 0" in r.output and "missing" in r.output \
        and "not 0 or 1" in r.output


def _table_rows(output: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows (cells stripped) of the one rich table in ``output``."""
    header = [c.strip() for c in next(line for line in output.splitlines() if "┃" in line).split("┃")[1:-1]]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]
    return header, rows


def test_runs_shows_a_dash_for_what_an_unfinished_run_lacks(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    for name, files in (("done", ("config.json", "cv.json")), ("a-half", ("config.json",))):
        (runs / name).mkdir(parents=True)
        for f in files:
            shutil.copy(tiny_run / f, runs / name / f)
    for marker in tiny_run.glob("fold*/oof.csv"):  # "done" trained every fold
        shutil.copytree(marker.parent, runs / "done" / marker.parent.name, ignore=shutil.ignore_patterns("*.pt"))
    (runs / "done" / "test_probs.csv").write_text("id,prob_dog\n0,0.5\n")
    r = invoke("runs", "--runs-dir", runs)
    assert r.exit_code == 0 and "nan" not in r.output.lower()
    header, cells = _table_rows(r.output)
    assert header == ["run", "arch", "recipe", "size", "epochs", "folds", "metric", "score", "accuracy", "log-loss",
                      "ROC-AUC", "time", "test preds", "created", "status"]
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in cells}
    assert list(rows) == ["done", "a-half"]  # one line per run, best first, the unfinished last
    half, done = rows["a-half"], rows["done"]
    assert [half[h] for h in ("score", "accuracy", "log-loss", "ROC-AUC", "time")] == ["-", "-", "-", "-", "-"]
    assert done["metric"] == half["metric"] == "accuracy" and done["score"] == done["accuracy"]  # the metric first
    assert all(done[h] not in ("", "-") for h in ("accuracy", "log-loss", "ROC-AUC", "time"))
    seconds = json.loads((tiny_run / "cv.json").read_text())["seconds"]
    assert done["time"] == _duration(seconds) and done["log-loss"].startswith("0.")
    assert (half["folds"], done["folds"]) == ("0/3", "3/3")
    assert (half["test preds"], done["test preds"]) == ("no", "yes")
    assert half["recipe"] == "lenet" and half["size"] == "32" and half["status"] == "unfinished"
    r = invoke("runs", "--runs-dir", runs, "--sort", "name")
    assert [row[0] for row in _table_rows(r.output)[1]] == ["a-half", "done"]
    r = invoke("runs", "--runs-dir", runs, "--sort", "created")
    assert r.exit_code == 0
    r = invoke("runs", "--runs-dir", runs, "--sort", "speed")
    assert r.exit_code == 2 and "speed" in r.output


def test_help_keeps_square_brackets():
    r = invoke("predict", "--help")
    text = " ".join(r.output.replace("│", " ").split())  # the help box may wrap a line anywhere
    assert r.exit_code == 0 and "Clip probabilities to [eps, 1-eps] (redux)." in text


def test_validate_prints_warnings_and_still_passes(tmp_path):
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("id,path\n0,test/0.jpg\n1,test/1.jpg\n")
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"id,label\r\n0,1\r\n1,0\r\n")
    r = invoke("validate", crlf, "--test", test_csv)
    assert r.exit_code == 0, r.output
    assert "warning: The lines end in CRLF" in r.output and f"valid: {crlf} (course format) with 1 warning" in r.output
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfid,label\n0,1\n1,0\n")
    r = invoke("validate", bom, "--test", test_csv, "--format", "kaggle")
    assert r.exit_code == 0 and "warning: The file starts with a UTF-8 byte-order mark" in r.output
    r = invoke("validate", bom, "--test", test_csv)  # the course format is strict
    assert r.exit_code == 1 and "invalid:" in r.output and "byte-order mark" in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_is_one_clear_line(workdir):
    r = invoke("train", "--device", "cuda", "--run-name", "nocuda", "--no-progress")
    assert r.exit_code == 1
    assert "no CUDA GPU" in r.output and "Traceback" not in r.output


def test_unknown_arch_and_missing_data_are_clear(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "--arch", "resnet343", "--no-progress")
    assert r.exit_code == 1 and "Did you mean" in r.output
    r = invoke("train", "--no-progress")
    assert r.exit_code == 1 and "pipeline download" in r.output


def test_doctor_reports_versions(workdir):
    r = invoke("doctor", "--data-dir", workdir / "data")
    assert r.exit_code == 0 and torch.__version__ in r.output and "600 rows" in r.output


@pytest.mark.slow
def test_demo_through_the_installed_entry_point(tmp_path):
    exe = Path(sys.executable).parent / "pipeline"
    if not exe.exists():
        pytest.skip("the package is not installed (pip install -e .)")
    proc = subprocess.run([str(exe), "demo", "--workdir", str(tmp_path / "demo")], capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    subs = list((tmp_path / "demo" / "submissions").glob("*.csv"))
    assert len(subs) == 1
    check = subprocess.run([str(exe), "validate", str(subs[0]), "--test", str(tmp_path / "demo/data/test.csv")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "CV accuracy" in proc.stdout
    assert list((tmp_path / "demo" / "runs").glob("*/report/report.html"))


@pytest.mark.shared
def test_download_of_the_shared_mini_set_over_loopback_http(tmp_path, monkeypatch, shared_path):
    """The issue's acceptance run: the shared zips served on 127.0.0.1, catalogued and folded."""
    from tests.conftest import MINI
    from tests.httpserver import serve_dir

    mini = shared_path(MINI)
    monkeypatch.chdir(tmp_path)
    with serve_dir(mini) as server:
        r = invoke("download", "--url", server.url("train.zip"), "--url", server.url("test.zip"), "--no-progress")
        assert r.exit_code == 0, r.output
        gets = [q for q in server.requests if q.method == "GET"]
        again = invoke("download", "--url", server.url("train.zip"), "--url", server.url("test.zip"), "--no-progress")
        assert again.exit_code == 0 and len(server.requests) == len(gets)  # second run: no request at all
    train, test = pd.read_csv("data/train.csv"), pd.read_csv("data/test.csv")
    assert len(train) == 1600 and (train.label == 1).sum() == 800 and (train.label == 0).sum() == 800
    assert test.id.tolist() == list(range(400))
    folds = pd.read_csv("data/folds.csv")
    assert sorted(folds.path) == sorted(train.path) \
        and folds.fold.value_counts().to_dict() == dict.fromkeys(range(5), 320)
    assert pd.read_csv("data/catalog_problems.csv").empty


@pytest.mark.parametrize("args,expected", [
    (["--lr", "-0.1"], "--lr must be above 0, got -0.1."),
    (["--workers", "-1"], "--workers must be zero or more, got -1."),
    (["--epochs", "0"], "--epochs must be at least 1, got 0."),
    (["--img-size", "100000"], "--img-size must be between 32 and 1024 pixels, got 100000."),
    (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA GPU"),
    (["--arch", "resnet50", "--img-size", "1024", "--batch-size", "4096"], "for one training step of resnet50"),
])
def test_impossible_options_are_one_line_before_any_work(workdir, args, expected):
    """Before, --lr -1 and --workers -1 were torch tracebacks, --img-size 100000 decoded for 90 s, then OOM."""
    r = invoke("train", *args, "--run-name", "never", "--no-progress")
    assert r.exit_code == 1 and expected in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (workdir / "runs" / "never").exists()


def test_the_logs_starred_epoch_cv_json_and_the_table_agree(data_copy, tmp_path, monkeypatch):
    """One numbering, from 1, wherever a person reads the best epoch (issue 28: cv.json said one less)."""
    import re

    shutil.move(str(data_copy), tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "--arch", "lenet", "--img-size", "32", "--epochs", "4", "--batch-size", "32", "--workers", "0",
               "--patience", "0", "--folds", "0", "--run-name", "star", "--tracker", "none")
    assert r.exit_code == 0, r.output
    starred = [int(e) for e in re.findall(r"fold 0 \(1/1\) epoch (\d+)/4: .*\*", r.output)]
    assert starred and starred[0] == 1  # the first epoch always improves on nothing
    cv = json.loads((tmp_path / "runs" / "star" / "cv.json").read_text())
    assert cv["folds"]["0"]["best_epoch"] == starred[-1]
    (row,) = [line for line in r.output.splitlines() if re.match(r"\W*0\s*│", line)]
    assert row.split("│")[-2].strip() == str(starred[-1])
