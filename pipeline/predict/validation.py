"""Validate, write and score submissions (the formats are :mod:`pipeline.predict.formats`).

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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.metrics import log_loss

from pipeline.errors import SubmissionError
from pipeline.fileio import write_text
from pipeline.predict.formats import HEADER, SubmissionFormat, csv_text, get_format, listing

_INTEGER = re.compile(r"[0-9]+")
_PADDED = re.compile(r"0[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")
_BOM = "\ufeff"


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
        text = csv_text(sub)
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
        problems.append(f"{len(not_int)} id(s) are not integers: {listing(not_int.tolist(), repr)}.")
    if len(negative):
        problems.append(f"{len(negative)} id(s) are negative, so not in the test set: "
                        f"{listing(negative.tolist(), repr)}.")
    padded = ids[ids.str.fullmatch(_PADDED)]
    if len(padded):
        problems.append(f"{len(padded)} id(s) are written with leading zeros: {listing(padded.tolist(), repr)}; "
                        "ids must be written without leading zeros, since '007' reads as 7 on some checkers and "
                        "as '007' on others.")
    if spec.probability:
        values = pd.to_numeric(labels, errors="coerce")
        bad = labels[(labels != "") & ~values.between(0, 1)]
        if len(bad):
            problems.append(f"{len(bad)} label(s) are not probabilities in [0, 1]: {listing(bad.tolist(), repr)}.")
    else:
        bad = labels[(labels != "") & ~labels.isin(["0", "1"])]
        if len(bad):
            problems.append(f"{len(bad)} label(s) are not 0 or 1: {listing(bad.tolist(), repr)}.")

    int_ids = ids[ids.str.fullmatch(_INTEGER)].astype(int)
    duplicated = sorted(set(int_ids[int_ids.duplicated()]))
    if duplicated:
        problems.append(f"{len(duplicated)} id(s) appear more than once: {listing(duplicated)}.")
    expected, present = set(test_ids), set(int_ids)
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing:
        problems.append(f"{len(missing)} test id(s) are missing: {listing(missing)}.")
    if extra:
        problems.append(f"{len(extra)} id(s) are not in the test set: {listing(extra)}.")
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
    return write_text(path, csv_text(sub))


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
