"""Send a submission to its competition and keep a log of every one (``pipeline submit``).

- ``kaggle`` and ``kaggle-redux``: the official CLI, ``kaggle competitions submit -c SLUG -f FILE -m
  MESSAGE``, then ``kaggle competitions submissions -c SLUG`` for the competition's answer.
- ``course`` (猫狗大战): the site takes the file in a browser, so the file is validated, its checksum
  taken, and the user uploads it.

A file is validated against the test catalogue first, as the source's format; an invalid file is never
sent. Each submission, sent or (for the course) validated, adds a row to ``submissions/log.csv``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from filelock import FileLock

from pipeline import kaggle
from pipeline.competitions.spec import data_competition
from pipeline.data.fetch import sha256_file
from pipeline.data.sources import SOURCES, Source, get_source
from pipeline.errors import ConfigError, DataError, SubmissionError, SubmitError
from pipeline.fileio import write_csv
from pipeline.predict.formats import FORMATS, format_for, note_path, read_test_ids
from pipeline.predict.validation import check_submission

_logger = logging.getLogger(__name__)

SUBMIT_SOURCES = {name: s.submission_format for name, s in SOURCES.items() if s.submission_format}
LOG_COLUMNS = ["time", "file", "sha256", "source", "format", "rows", "status", "message", "runs", "weights",
               "ensemble", "oof_accuracy", "oof_log_loss", "oof_roc_auc", "temperature", "answer"]


@dataclass
class Submitted:
    """What ``submit`` did.

    ``status`` is ``sent`` (the competition took the file), ``validated`` (course: upload it in a
    browser) or ``rejected`` (only in the log: ``submit`` raises then). ``answer`` is what the
    competition said (the CLI's output); ``latest`` the newest row of the competition's list of
    submissions (``fileName``, ``date``, ``status``, ``publicScore``, ...) when it could be read.
    """

    file: Path
    source: str
    format: str
    rows: int
    sha256: str
    message: str
    status: str
    log: Path
    answer: str = ""
    latest: dict | None = None
    listing: str = ""
    page: str | None = None
    warnings: list[str] = field(default_factory=list)
    upload_hint: str = ""  # validated: where to upload it by hand


COURSE_PAGE = "the course competition's submission page (on the course site)"


def upload_hint(source: str, page: str | None) -> str:
    """Where a file that ``submit`` cannot send goes: the course site for the course, else the competition's own
    site (its spec names no Kaggle slug)."""
    if source == "course":
        return f"upload it by hand on {page or COURSE_PAGE}"
    where = page or "the competition's site (its spec names no homepage)"
    return (f"not sent: competition {source}'s spec names no Kaggle slug ([data] kaggle), so upload it by hand on "
            f"{where}")


def submit(file: str | Path, source: str | None = None, *, test_csv: str | Path = Path("data/test.csv"),
           message: str | None = None, log_path: str | Path = Path("submissions/log.csv")) -> Submitted:
    """Validate ``file`` as ``source``'s format, send it (Kaggle) or prepare it for upload (course), log it.

    Args:
        file: the submission CSV.
        source: ``kaggle``, ``kaggle-redux`` or ``course``; default: the competition ``pipeline download``
            recorded beside ``test_csv`` (sent with its Kaggle slug, or uploaded by hand when it has none).
        test_csv: the test catalogue the ids must match.
        message: the submission's description on Kaggle (default: the file's name and, from its JSON
            note, the runs blended).
        log_path: the CSV that gets one row per submission.

    Raises:
        SubmissionError: the file fails validation (nothing is sent or logged).
        SubmitError: no kaggle CLI or credentials (nothing is sent or logged), or the competition rejected
            the file (the attempt is logged with the competition's answer).
    """
    if source is not None and source not in SUBMIT_SOURCES:
        raise ConfigError(f"--source must be one of {', '.join(SUBMIT_SOURCES)}, got {source!r}.")
    file, log_path = Path(file), Path(log_path)
    if source is not None:
        src, spec = get_source(source), FORMATS[SUBMIT_SOURCES[source]]
    else:
        comp = data_competition(Path(test_csv).parent)
        src, spec = Source.of(comp), format_for(comp, Path(test_csv).parent)
        source = comp.name
    fmt = spec.name
    if not file.is_file():
        raise SubmissionError(f"{file} does not exist; write one with `pipeline predict`.")
    result = check_submission(file, read_test_ids(test_csv, numeric=spec.numeric_ids), spec)
    if result.problems:
        raise SubmissionError(_one_line(f"Not sent: {file} is not a valid {fmt} submission for {source} "
                                        f"({len(result.problems)} problem(s)): {' '.join(result.problems)} Fix it "
                                        f"and check it with `pipeline validate {file} --format {fmt}`."))
    note, warnings = _read_note(file)
    done = Submitted(file=file, source=source, format=fmt, rows=_data_rows(file), sha256=sha256_file(file),
                     message=message if message is not None else default_message(file, note), status="validated",
                     log=log_path, warnings=list(result.warnings) + warnings)
    if src.kaggle_competition is None:  # the course site, or a spec without a Kaggle slug: uploaded by hand
        done.page = src.homepage or None
        done.upload_hint = upload_hint(source, done.page)
        append_log(log_path, _log_row(done, note))
        return done

    slug = src.kaggle_competition
    exe = kaggle.command(slug, SubmitError)
    sent, refused = kaggle.submit(exe, slug, file, done.message)
    done.answer = kaggle.output(sent)
    if not refused:
        listing = kaggle.submissions(exe, slug)
        done.listing = kaggle.output(listing)
        if listing.returncode == 0:
            done.latest = kaggle.latest_submission(listing.stdout)
        else:
            done.warnings.append(f"The list of submissions could not be read ({_one_line(done.listing)}); see it "
                                 f"with `kaggle competitions submissions -c {slug}`.")
        ours = done.latest is not None and done.latest.get("fileName") == file.name
        refused = ours and "error" in done.latest.get("status", "").lower()
    done.status = "rejected" if refused else "sent"
    append_log(log_path, _log_row(done, note))
    if refused:
        said = done.answer if sent.returncode != 0 or not done.latest else _describe(done.latest)
        code = f", exit status {sent.returncode}" if sent.returncode else ""
        raise SubmitError(_one_line(f"The competition {slug} did not accept {file}{code}: "
                                    f"{said or 'no answer'}; the attempt is logged in {log_path}."))
    return done


def default_message(file: Path, note: dict | None) -> str:
    """``<file name>: runs A + B`` (the runs from the submission's JSON note, when it has one)."""
    runs = [Path(r).name for r in (note or {}).get("runs") or []]
    return f"{file.name}: runs {' + '.join(runs)}" if runs else file.name


def read_log(log_path: str | Path) -> pd.DataFrame:
    """``submissions/log.csv`` as text columns (empty, with the log's columns, when it does not exist)."""
    log_path = Path(log_path)
    if not log_path.exists():
        return pd.DataFrame(columns=LOG_COLUMNS)
    try:
        return pd.read_csv(log_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"The submission log {log_path} cannot be read ({_one_line(str(exc))}); move it aside and "
                        "submit again (a new log is started).") from None


def append_log(log_path: str | Path, row: dict) -> Path:
    """Add ``row`` to the log under a file lock, rewriting it atomically (an interrupt never truncates it)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(log_path.with_name(f".{log_path.name}.lock")):
        old = read_log(log_path)
        rows = pd.concat([r for r in (old, pd.DataFrame([row], dtype=str)) if not r.empty], ignore_index=True)
        extra = [c for c in rows.columns if c not in LOG_COLUMNS]  # columns a later version added
        write_csv(log_path, rows.reindex(columns=LOG_COLUMNS + extra).astype(object).fillna(""))
    return log_path


# ---- helpers ----------------------------------------------------------------------------------
def _read_note(file: Path) -> tuple[dict | None, list[str]]:
    """The JSON note ``pipeline predict`` wrote beside the submission, and a warning if it is unreadable."""
    path = note_path(file)
    if not path.exists():
        return None, []
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"The note {path} cannot be read ({exc}); the log row lacks the runs and OOF figures."]
    return (note if isinstance(note, dict) else None), []


def _log_row(done: Submitted, note: dict | None) -> dict:
    note = note or {}
    oof = note.get("oof") or {}
    calibration = note.get("calibration") or {}

    def figure(value) -> str:
        return "" if value is None else f"{value:.6g}"

    return {"time": datetime.now().isoformat(timespec="seconds"), "file": str(done.file), "sha256": done.sha256,
            "source": done.source, "format": done.format, "rows": str(done.rows), "status": done.status,
            "message": done.message, "runs": ";".join(Path(r).name for r in note.get("runs") or []),
            "weights": ";".join(f"{w:.4f}" for w in note.get("weights") or []) if note.get("runs") else "",
            "ensemble": note.get("ensemble") or "", "oof_accuracy": figure(oof.get("accuracy")),
            "oof_log_loss": figure(oof.get("log_loss")), "oof_roc_auc": figure(oof.get("roc_auc")),
            "temperature": figure(calibration.get("temperature")),
            "answer": _one_line(" | ".join(x for x in (done.answer, _describe(done.latest) if done.latest else "")
                                           if x))}


def _describe(latest: dict) -> str:
    """``status complete, publicScore 0.0612, ...`` from the newest row of the list of submissions."""
    return ", ".join(f"{k} {v}" for k, v in latest.items() if v and k not in ("fileName", "description"))


def _data_rows(file: Path) -> int:
    """The number of data rows (lines after the header) of a validated CSV."""
    with open(file, "rb") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


def _one_line(text: str) -> str:
    return " ".join(text.split())
