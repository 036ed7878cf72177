"""`pipeline submit`: validation first, the official kaggle CLI's exact arguments, the course path, the log.

A stand-in ``kaggle`` executable first on PATH records its arguments and answers as the real CLI does.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.kaggle import latest_submission
from pipeline.predict.upload import LOG_COLUMNS, append_log, read_log
from tests.test_cli import invoke

REDUX = "dogs-vs-cats-redux-kernels-edition"
LISTING = """\
Warning: Looks like you're using an outdated API Version, please consider updating (server 1.7.4 / client 1.6.17)
fileName               date                 description          status    publicScore  privateScore
---------------------  -------------------  -------------------  --------  -----------  ------------
{name:<21}  2026-11-23 17:50:01  {message:<19.19}  {status:<8}  {score:<11}  {score}
older.csv              2026-11-20 09:12:44  first try            complete  0.69314      0.69314
"""

# what the stand-in kaggle does in each mode: ok (accepted, scored), refuse (exits 1 with the site's error),
# scored-error (accepted, then the list of submissions says its scoring failed)
KAGGLE = """\
import json, os, sys
args = sys.argv[1:]
with open({record!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
mode = {mode!r}
if args[:2] == ["competitions", "submit"]:
    if mode == "refuse":
        print("400 - Bad Request - Submission not allowed:  Your team has used its daily Submission allowance "
              "(5) today, please try again tomorrow UTC (8 hours from now).", file=sys.stderr)
        sys.exit(1)
    print("100%|##########| 1.95k/1.95k [00:00<00:00, 4.10kB/s]")
    print("Successfully submitted to Dogs vs. Cats Redux: Kernels Edition")
elif args[:2] == ["competitions", "submissions"]:
    sent = [json.loads(line) for line in open({record!r})][-2]
    name, message = os.path.basename(sent[sent.index("-f") + 1]), sent[sent.index("-m") + 1]
    status, score = ("error", "") if mode == "scored-error" else ("complete", "0.06123")
    print({listing!r}.format(name=name, message=message, status=status, score=score), end="")
else:
    sys.exit(2)
"""


def _kaggle(tmp_path: Path, monkeypatch, mode: str = "ok", credentials: bool = True) -> Path:
    """Put a stand-in ``kaggle`` alone on PATH; return the file its calls are recorded in (absent until called)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "kaggle-calls.jsonl"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "kaggle"
    script.write_text(f"#!{sys.executable}\n" + KAGGLE.format(record=str(record), mode=mode, listing=LISTING))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    _no_credentials(tmp_path, monkeypatch)
    if credentials:
        config = tmp_path / "kaggle-config"
        config.mkdir()
        (config / "kaggle.json").write_text('{"username": "someone", "key": "0123456789abcdef"}')
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    return record


def _no_credentials(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def _calls(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture(scope="module")
def predicted(tiny_run, sample_data, tmp_path_factory) -> dict:
    """Real submissions of a copy of the tiny run, with predict's JSON notes: redux (P(dog)) and 0/1 labels."""
    from pipeline.predict.predict import predict

    root = tmp_path_factory.mktemp("predicted")
    runs = root / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    out = {}
    for fmt in ("redux", "kaggle"):
        out[fmt] = predict(runs=[runs / "tiny"], test_csv=sample_data / "test.csv", fmt=fmt, tta="none",
                           runs_dir=runs, out=root / "subs" / f"tiny-{fmt}.csv", progress=False)["path"]
    return out


@pytest.fixture
def submission(predicted, tmp_path) -> callable:
    """A private copy of a predicted submission (and its note) in tmp_path/submissions."""
    def copy(fmt: str) -> Path:
        dest = tmp_path / "submissions"
        dest.mkdir(exist_ok=True)
        shutil.copy(predicted[fmt].with_suffix(".json"), dest)
        return Path(shutil.copy(predicted[fmt], dest))
    return copy


def test_redux_is_sent_with_exactly_the_official_arguments_and_logged(submission, sample_data, tmp_path,
                                                                      monkeypatch):
    record = _kaggle(tmp_path, monkeypatch)
    file = submission("redux")
    log = tmp_path / "submissions" / "log.csv"
    r = invoke("submit", file, "--source", "kaggle-redux", "--test", sample_data / "test.csv", "--log", log)
    assert r.exit_code == 0, r.output
    message = f"{file.name}: runs tiny"  # the default: the file's name and the runs from its note
    assert _calls(record) == [["competitions", "submit", "-c", REDUX, "-f", str(file), "-m", message],
                              ["competitions", "submissions", "-c", REDUX]]
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert f"sent: {file} (100 rows, redux format, sha256 {digest}) to kaggle-redux" in r.output
    assert "Successfully submitted to Dogs vs. Cats Redux" in r.output
    assert f"latest submission: fileName {file.name}, date 2026-11-23 17:50:01" in r.output
    assert "status complete, publicScore 0.06123" in r.output

    (row,) = read_log(log).to_dict("records")
    note = json.loads(file.with_suffix(".json").read_text())
    assert list(row) == LOG_COLUMNS
    assert (row["file"], row["sha256"], row["source"], row["format"], row["rows"], row["status"]) == \
        (str(file), digest, "kaggle-redux", "redux", "100", "sent")
    assert (row["message"], row["runs"], row["weights"], row["ensemble"]) == (message, "tiny", "1.0000", "fit")
    assert float(row["oof_log_loss"]) == pytest.approx(note["oof"]["log_loss"], rel=1e-5)
    assert float(row["temperature"]) == pytest.approx(note["calibration"]["temperature"], rel=1e-5)
    assert "Successfully submitted" in row["answer"] and "publicScore 0.06123" in row["answer"]


def test_a_message_is_sent_as_given_and_a_second_submission_adds_a_row(submission, sample_data, tmp_path,
                                                                        monkeypatch):
    record = _kaggle(tmp_path, monkeypatch)
    file, log = submission("kaggle"), tmp_path / "log.csv"
    for message in ("resnet, 5 folds", "again"):
        r = invoke("submit", file, "--source", "kaggle", "-m", message, "--test", sample_data / "test.csv",
                   "--log", log)
        assert r.exit_code == 0, r.output
    sent = [c for c in _calls(record) if c[1] == "submit"]
    assert sent == [["competitions", "submit", "-c", "dogs-vs-cats", "-f", str(file), "-m", m]
                    for m in ("resnet, 5 folds", "again")]
    assert list(read_log(log).message) == ["resnet, 5 folds", "again"]


def test_a_refused_submission_shows_the_sites_error_exits_1_and_is_logged(submission, sample_data, tmp_path,
                                                                           monkeypatch):
    record = _kaggle(tmp_path, monkeypatch, mode="refuse")
    file, log = submission("redux"), tmp_path / "log.csv"
    r = invoke("submit", file, "--source", "kaggle-redux", "--test", sample_data / "test.csv", "--log", log)
    assert r.exit_code == 1 and "Traceback" not in r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"error: The competition {REDUX} did not accept {file}, exit status 1: 400 - Bad Request "
                           "- Submission not allowed: Your team has used its daily Submission allowance (5) today")
    assert line.endswith(f"; the attempt is logged in {log}.")
    assert len(_calls(record)) == 1  # no list of submissions asked for
    (row,) = read_log(log).to_dict("records")
    assert row["status"] == "rejected" and "daily Submission allowance" in row["answer"]


def test_a_failed_scoring_in_the_list_of_submissions_exits_1(submission, sample_data, tmp_path, monkeypatch):
    _kaggle(tmp_path, monkeypatch, mode="scored-error")
    file, log = submission("redux"), tmp_path / "log.csv"
    r = invoke("submit", file, "--source", "kaggle-redux", "--test", sample_data / "test.csv", "--log", log)
    assert r.exit_code == 1
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"error: The competition {REDUX} did not accept {file}: date 2026-11-23 17:50:01, "
                           "status error;")
    assert read_log(log).status.tolist() == ["rejected"]


@pytest.mark.parametrize("source, content", [
    ("kaggle", "id,label\n0,1\n0,1\n1,2\n"),  # a duplicate id, a bad label, ids missing
    ("kaggle", None),  # a valid redux file (probabilities) sent to the 0/1 competition
])
def test_an_invalid_file_is_never_sent(submission, sample_data, tmp_path, monkeypatch, source, content):
    record = _kaggle(tmp_path, monkeypatch)
    file = submission("redux")
    if content is not None:
        file.write_text(content)
    log = tmp_path / "log.csv"
    r = invoke("submit", file, "--source", source, "--test", sample_data / "test.csv", "--log", log)
    assert r.exit_code == 1
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"error: Not sent: {file} is not a valid kaggle submission for kaggle (")
    assert "not 0 or 1" in line and f"`pipeline validate {file} --format kaggle`" in line
    if content is not None:
        assert "appear more than once: 0." in line and "test id(s) are missing" in line
    assert not record.exists() and not log.exists()


def test_without_the_kaggle_command_one_line_says_what_to_install(submission, sample_data, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    file, log = submission("kaggle"), tmp_path / "log.csv"
    r = invoke("submit", file, "--source", "kaggle", "--test", sample_data / "test.csv", "--log", log)
    assert r.exit_code == 1
    assert r.output.strip() == ("error: The kaggle command was not found: install it with `pip install kaggle` and put "
                                "your API token in ~/.kaggle/kaggle.json (and accept the competition rules on "
                                "https://www.kaggle.com/competitions/dogs-vs-cats/rules).")
    assert not log.exists()


def test_without_credentials_one_line_says_where_the_token_goes(submission, sample_data, tmp_path, monkeypatch):
    record = _kaggle(tmp_path, monkeypatch, credentials=False)
    file, log = submission("kaggle"), tmp_path / "log.csv"
    r = invoke("submit", file, "--source", "kaggle", "--test", sample_data / "test.csv", "--log", log)
    assert r.exit_code == 1
    (line,) = r.output.strip().splitlines()
    assert line.startswith("error: No Kaggle API credentials found") and "save it as ~/.kaggle/kaggle.json" in line
    assert not record.exists() and not log.exists()


def test_course_prints_path_rows_checksum_and_page_and_logs_without_sending(submission, sample_data, tmp_path,
                                                                             monkeypatch):
    record = _kaggle(tmp_path, monkeypatch)  # present, and never called for the course
    file = submission("kaggle")  # 0/1 labels: the course's format too
    log = tmp_path / "log.csv"
    r = invoke("submit", file, "--source", "course", "--test", sample_data / "test.csv", "--log", log)
    assert r.exit_code == 0, r.output
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert r.output.splitlines() == [
        f"valid: {file.resolve()} (100 rows, course format, sha256 {digest})",
        "upload it by hand on the course competition's submission page (on the course site)",
        f"logged in {log}"]
    assert not record.exists()
    (row,) = read_log(log).to_dict("records")
    assert (row["source"], row["status"], row["sha256"], row["runs"], row["answer"]) == \
        ("course", "validated", digest, "tiny", "")


def test_latest_submission_reads_the_ruled_table():
    text = LISTING.format(name="a.csv", message="my message", status="complete", score="0.05")
    assert latest_submission(text) == {"fileName": "a.csv", "date": "2026-11-23 17:50:01",
                                       "description": "my message", "status": "complete", "publicScore": "0.05",
                                       "privateScore": "0.05"}
    assert latest_submission("No submissions found\n") is None


def test_the_log_keeps_every_row_and_columns_it_does_not_know(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame([{"time": "t0", "file": "old.csv", "from_the_future": "x"}]).to_csv(log, index=False)
    append_log(log, {"time": "t1", "file": "new.csv", "message": "a, \"quoted\" message"})
    df = read_log(log)
    assert list(df.columns) == [*LOG_COLUMNS, "from_the_future"]
    assert df.file.tolist() == ["old.csv", "new.csv"] and df.message.tolist() == ["", 'a, "quoted" message']
    assert df.from_the_future.tolist() == ["x", ""]
    assert not list(tmp_path.glob(".log.csv.*.tmp"))
