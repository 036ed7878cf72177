"""Build, validate, write and score competition submissions (``id,label`` CSV files).

Three formats share the header ``id,label``:

- ``course``: the course competition 猫狗大战; label 1 = dog, 0 = cat; test ids from 0.
- ``kaggle``: Kaggle "Dogs vs. Cats" (2013); the same 0/1 labels; test ids from 1.
- ``redux``: Kaggle "Dogs vs. Cats Redux"; label = P(dog), clipped to [eps, 1-eps] for log-loss.

Validation reads the file as text, so it can name defects pandas would otherwise paper over
(``3.0`` ids, a missing header, empty cells). A frame is validated as the exact CSV text it would
be written as, so ``validate_submission`` on a frame and on its written file always agree.

Text-level defects, and what each competition's checker makes of them (``check_submission``
returns problems, which make a file invalid, and warnings, which do not):

- A UTF-8 byte-order mark (Excel's "CSV UTF-8" writes one): Kaggle's checkers read submissions with
  pandas-like CSV readers that strip it, so for ``kaggle`` and ``redux`` it is a warning. The course
  site's checker is unknown, so ``course`` is strict: a reader that keeps the mark sees an invisible
  character before ``id`` and rejects the header, so it is a problem.
- CRLF line ends (Windows editors write them): every CSV reader we know accepts them, Kaggle's
  included; a warning for every format.
- Ids with leading zeros (``007``): a problem for every format. A checker that parses numbers
  reads 7, one that compares text reads ``'007'`` and finds neither 7 nor ``'007'`` in its key.
- Negative ids (``-1``): no test image has one; reported as negative, not in the test set.
- A header with spaces around its names (`` id , label``): a problem; checkers compare names exactly.
- Anything that is not UTF-8 (UTF-16 from some editors): a problem.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from pipeline.errors import SubmissionError
from pipeline.fileio import write_text

HEADER = ["id", "label"]
_FLOAT_FORMAT = "%.6f"
_MAX_LISTED = 5
_INTEGER = re.compile(r"[0-9]+")
_PADDED = re.compile(r"0[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")
_BOM = "\ufeff"


@dataclass(frozen=True)
class SubmissionFormat:
    """One competition's submission format."""

    name: str
    description: str
    probability: bool  # label is P(dog) rather than 0/1
    strips_bom: bool = False  # the competition's checker ignores a UTF-8 byte-order mark (see the module notes)


FORMATS: dict[str, SubmissionFormat] = {
    f.name: f
    for f in (
        SubmissionFormat("course", "猫狗大战 course competition: id,label with 1 = dog, 0 = cat", False),
        SubmissionFormat("kaggle", 'Kaggle "Dogs vs. Cats" (2013): id,label with 1 = dog, 0 = cat', False, True),
        SubmissionFormat("redux", 'Kaggle "Dogs vs. Cats Redux": id,label with label = P(dog), clipped', True, True),
    )
}


def get_format(name: str) -> SubmissionFormat:
    """The format called ``name``.

    Args:
        name: one of the keys of ``FORMATS``.
    """
    if name not in FORMATS:
        raise SubmissionError(f"Unknown submission format {name!r}; choose one of {', '.join(FORMATS)}.")
    return FORMATS[name]


def parse_image_id(name: str) -> int:
    """The test id in an image file name: ``12.jpg``, ``test/12.jpg`` and ``0012.png`` give 12.

    Args:
        name: a file name or path whose stem is the id.
    """
    stem = Path(name).stem
    if not _INTEGER.fullmatch(stem):
        raise SubmissionError(f"Cannot read a test id from the file name {name!r}: test images must be "
                              "named <number>.<ext>, e.g. 12.jpg.")
    return int(stem)


def read_test_ids(test_csv: str | Path) -> list[int]:
    """The ids of the test catalogue ``data/test.csv`` (``id,path``), sorted.

    Every id, including the photos the catalogue marks unreadable (``readable`` False): the
    competition expects a row for each of them all the same.

    Args:
        test_csv: the catalogue written by ``pipeline download``.
    """
    test_csv = Path(test_csv)
    if not test_csv.exists():
        raise SubmissionError(f"{test_csv} does not exist; run `pipeline download` to catalogue the test images.")
    df = pd.read_csv(test_csv, dtype={"id": str})
    if "id" not in df.columns:
        raise SubmissionError(f"{test_csv} has no 'id' column; rebuild it with `pipeline download`.")
    bad = df.id[~df.id.fillna("").str.fullmatch(_INTEGER)].tolist()
    if bad:
        raise SubmissionError(f"{test_csv} has non-integer ids ({_listing(bad, repr)}); "
                              "rebuild it with `pipeline download`.")
    ids = df.id.astype(int)
    if ids.duplicated().any():
        raise SubmissionError(f"{test_csv} lists ids more than once ({_listing(sorted(set(ids[ids.duplicated()])))}); "
                              "rebuild it with `pipeline download`.")
    if ids.empty:
        raise SubmissionError(f"{test_csv} lists no test images; check the test download and catalogue it again.")
    return sorted(ids.tolist())


def make_submission(probs: pd.DataFrame, fmt: str, *, threshold: float = 0.5, eps: float = 0.005) -> pd.DataFrame:
    """Turn ``id, prob_dog`` predictions into an ``id,label`` frame sorted by numeric id.

    Args:
        probs: one row per test image with columns ``id`` and ``prob_dog``.
        fmt: a format name (see ``FORMATS``).
        threshold: P(dog) at or above which the label is 1 (0/1 formats); in (0, 1).
        eps: probabilities are clipped to [eps, 1 - eps] (probability formats); in [0, 0.5).
    """
    spec = get_format(fmt)
    if not 0 < threshold < 1:
        raise SubmissionError(f"--threshold must lie strictly between 0 and 1, not {threshold}; the usual is 0.5.")
    if not 0 <= eps < 0.5:
        raise SubmissionError(f"--eps must lie in [0, 0.5), not {eps}; the usual is 0.005.")
    missing = [c for c in ("id", "prob_dog") if c not in probs.columns]
    if missing:
        raise SubmissionError(f"The predictions lack column(s) {', '.join(missing)}; expected id, prob_dog.")
    prob = probs.prob_dog.astype(float)
    if not prob.between(0, 1).all():
        raise SubmissionError("Some predicted probabilities are missing or outside [0, 1]; check the model output.")
    ids = pd.to_numeric(probs.id, errors="coerce")
    if not (ids % 1 == 0).all():
        raise SubmissionError("Every prediction id must be an integer, the number in the test image's file name.")
    label = prob.clip(eps, 1 - eps) if spec.probability else (prob >= threshold).astype(int)
    sub = pd.DataFrame({"id": ids.to_numpy(np.int64), "label": label.to_numpy()})
    return sub.sort_values("id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Validation:
    """What ``check_submission`` found: ``problems`` make the file invalid (the checker would reject or
    misread it); ``warnings`` are defects the competition's checker tolerates."""

    problems: list[str]
    warnings: list[str]


def validate_submission(sub: str | Path | pd.DataFrame, test_ids: Iterable[int], fmt: str) -> list[str]:
    """Every problem that would make the competition reject or misread the submission; [] if valid.

    Warnings (defects the checker tolerates) are left out; ``check_submission`` returns both.

    Args:
        sub: a CSV file, or a frame (checked as the CSV that ``write_submission`` would write).
        test_ids: the ids the submission must hold, each exactly once.
        fmt: a format name (see ``FORMATS``).
    """
    return check_submission(sub, test_ids, fmt).problems


def check_submission(sub: str | Path | pd.DataFrame, test_ids: Iterable[int], fmt: str) -> Validation:
    """The problems and the warnings of a submission, judged as ``fmt``'s checker would (see the module notes).

    Args:
        sub: a CSV file, or a frame (checked as the CSV that ``write_submission`` would write).
        test_ids: the ids the submission must hold, each exactly once.
        fmt: a format name (see ``FORMATS``).
    """
    spec = get_format(fmt)
    if isinstance(sub, pd.DataFrame):
        text = _csv_text(sub)
    else:
        try:
            text = Path(sub).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            return Validation([f"The file is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8."],
                              [])
    problems, warnings = [], []
    if text.startswith(_BOM):
        text = text[len(_BOM):]
        if spec.strips_bom:
            warnings.append("The file starts with a UTF-8 byte-order mark (Excel's 'CSV UTF-8' writes one); "
                            "Kaggle's checker strips it, but UTF-8 without the mark is safer.")
        else:
            problems.append("The file starts with a UTF-8 byte-order mark (Excel's 'CSV UTF-8' writes one), which "
                            "the course site's checker may not strip: save it as UTF-8 without the mark.")
    if "\r\n" in text:
        warnings.append("The lines end in CRLF (Windows line ends); checkers accept them, but plain LF ends are "
                        "the safe choice.")
    return Validation(problems + _cell_problems(text, test_ids, spec), warnings)


def _cell_problems(text: str, test_ids: Iterable[int], spec: SubmissionFormat) -> list[str]:
    """The problems of the CSV ``text`` (no byte-order mark) cell by cell: header, ids, labels, rows."""
    try:
        cells = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False).fillna("")
    except pd.errors.EmptyDataError:
        return ["The file is empty; it needs the header line 'id,label' and one row per test image."]
    except pd.errors.ParserError as exc:
        return [f"The file is not a two-column CSV ({exc})."]
    if cells.shape[1] != 2:
        return [f"The file has {cells.shape[1]} columns; it needs exactly two, 'id,label'."]

    problems = []
    first = cells.iloc[0].tolist()
    if first != HEADER:
        if _INTEGER.fullmatch(first[0]):
            problems.append("The header line 'id,label' is missing: the first line is data.")
        elif [c.strip() for c in first] == HEADER:
            problems.append(f"The header {','.join(first)!r} has spaces around its names; it must be exactly "
                            "'id,label'.")
            cells = cells.iloc[1:]
        else:
            problems.append(f"The header is {','.join(first)!r}; it must be exactly 'id,label'.")
            cells = cells.iloc[1:]
    else:
        cells = cells.iloc[1:]
    ids, labels = cells[0], cells[1]

    empty = (ids == "") | (labels == "")
    if empty.any():
        problems.append(f"{int(empty.sum())} row(s) have an empty id or label.")
    negative = ids[ids.str.fullmatch(_NEGATIVE)]
    not_int = ids[(ids != "") & ~ids.str.fullmatch(_INTEGER) & ~ids.str.fullmatch(_NEGATIVE)]
    if len(not_int):
        problems.append(f"{len(not_int)} id(s) are not integers: {_listing(not_int.tolist(), repr)}.")
    if len(negative):
        problems.append(f"{len(negative)} id(s) are negative, so not in the test set: "
                        f"{_listing(negative.tolist(), repr)}.")
    padded = ids[ids.str.fullmatch(_PADDED)]
    if len(padded):
        problems.append(f"{len(padded)} id(s) are written with leading zeros: {_listing(padded.tolist(), repr)}; "
                        "ids must be written without leading zeros, since '007' reads as 7 on some checkers and "
                        "as '007' on others.")
    if spec.probability:
        values = pd.to_numeric(labels, errors="coerce")
        bad = labels[(labels != "") & ~values.between(0, 1)]
        if len(bad):
            problems.append(f"{len(bad)} label(s) are not probabilities in [0, 1]: {_listing(bad.tolist(), repr)}.")
    else:
        bad = labels[(labels != "") & ~labels.isin(["0", "1"])]
        if len(bad):
            problems.append(f"{len(bad)} label(s) are not 0 or 1: {_listing(bad.tolist(), repr)}.")

    int_ids = ids[ids.str.fullmatch(_INTEGER)].astype(int)
    duplicated = sorted(set(int_ids[int_ids.duplicated()]))
    if duplicated:
        problems.append(f"{len(duplicated)} id(s) appear more than once: {_listing(duplicated)}.")
    expected, present = set(test_ids), set(int_ids)
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing:
        problems.append(f"{len(missing)} test id(s) are missing: {_listing(missing)}.")
    if extra:
        problems.append(f"{len(extra)} id(s) are not in the test set: {_listing(extra)}.")
    if len(cells) != len(expected):
        problems.append(f"The file has {len(cells)} data rows; the test set has {len(expected)} images.")
    return problems


def write_submission(sub: pd.DataFrame, path: str | Path, test_ids: Iterable[int], fmt: str, *,
                     force: bool = False) -> Path:
    """Validate ``sub`` and write it atomically to ``path``; nothing is written if it is invalid.

    Args:
        sub: an ``id,label`` frame, e.g. from ``make_submission``.
        path: the CSV to write.
        test_ids: the ids the submission must hold, each exactly once.
        fmt: a format name (see ``FORMATS``).
        force: overwrite ``path`` if it exists.
    """
    path = Path(path)
    problems = validate_submission(sub, test_ids, fmt)
    if problems:
        raise SubmissionError(f"Refusing to write the invalid submission {path}: {' '.join(problems)}")
    if path.exists() and not force:
        raise SubmissionError(f"{path} already exists; choose another --out or pass --force to overwrite it.")
    return write_text(path, _csv_text(sub))


def score_submission(sub: str | Path | pd.DataFrame, solution: str | Path | pd.DataFrame,
                     fmt: str | None = None) -> dict:
    """Accuracy, and log-loss for a probability submission, against the true labels.

    Args:
        sub: the submission (CSV file or frame); its ids must be exactly the solution's.
        solution: ``id,label`` with the true 0/1 labels (1 = dog).
        fmt: the submission's format; by default 0/1 and probability labels are both accepted,
            and log-loss is reported when any label lies strictly between 0 and 1.
    """
    truth = solution if isinstance(solution, pd.DataFrame) else pd.read_csv(solution)
    if list(truth.columns) != HEADER:
        raise SubmissionError("The solution must have the columns id,label.")
    problems = validate_submission(sub, truth.id.tolist(), fmt or "redux")
    if problems:
        raise SubmissionError(f"The submission does not match the solution: {' '.join(problems)}")
    pred = sub if isinstance(sub, pd.DataFrame) else pd.read_csv(sub)
    merged = truth.merge(pred, on="id", suffixes=("_true", "_pred"))
    y, p = merged.label_true.to_numpy(int), merged.label_pred.to_numpy(float)
    is_prob = (fmt is not None and get_format(fmt).probability) or bool(((p > 0) & (p < 1)).any())
    return {
        "n": len(merged),
        "accuracy": float(((p >= 0.5) == (y == 1)).mean()),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if is_prob else None,
    }


def default_submission_name(run_names: list[str], now: datetime | None = None) -> str:
    """``<run1>+<run2>-YYYYmmdd-HHMMSS.csv``.

    Args:
        run_names: the runs blended into the submission.
        now: the time stamp (default: the current local time).
    """
    return f"{'+'.join(run_names) or 'submission'}-{(now or datetime.now()):%Y%m%d-%H%M%S}.csv"


def note_path(submission: str | Path) -> Path:
    """The JSON note ``pipeline predict`` writes beside a submission (runs, weights, OOF scores): ``<name>.json``."""
    return Path(submission).with_suffix(".json")


def _csv_text(sub: pd.DataFrame) -> str:
    """The CSV text of ``sub`` as written: no index, floats with six decimals, integers as is."""
    return sub.to_csv(index=False, float_format=_FLOAT_FORMAT, lineterminator="\n")


def _listing(values: list, fmt=str) -> str:
    """``1, 2, 3, 4, 5 and 7 more``."""
    shown = ", ".join(fmt(v) for v in values[:_MAX_LISTED])
    return shown + (f" and {len(values) - _MAX_LISTED} more" if len(values) > _MAX_LISTED else "")
