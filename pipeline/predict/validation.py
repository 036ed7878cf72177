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
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from pipeline.errors import SubmissionError
from pipeline.fileio import write_text
from pipeline.metrics import score
from pipeline.predict.formats import HEADER, SINGLE_LABELS, SubmissionFormat, csv_text, get_format, listing

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


def _cell_problems(text: str, test_ids: Iterable, spec: SubmissionFormat) -> list[str]:
    """The problems of the CSV ``text`` (no byte-order mark) cell by cell: header, ids, labels, rows."""
    header = spec.header
    quoted = ",".join(header)
    try:
        cells = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False).fillna("")
    except pd.errors.EmptyDataError:
        return [f"The file is empty; it needs the header line '{quoted}' and one row per test image."]
    except pd.errors.ParserError as exc:
        return [f"The file is not a {_count(len(header))}-column CSV ({exc})."]
    if cells.shape[1] != len(header):
        needs = f"exactly two, '{quoted}'" if len(header) == 2 else f"{len(header)}: {quoted}"
        return [f"The file has {cells.shape[1]} columns; it needs {needs}."]
    problems, cells = _header_problems(cells, header, spec)
    ids = cells[0]
    empty = (cells == "").any(axis=1)
    if empty.any():
        problems.append(f"{int(empty.sum())} row(s) have an empty id or label.")
    present = _id_problems(ids, spec, problems, expected := set(test_ids))
    problems += _label_problems(cells, spec)
    duplicated = sorted(set(present[present.duplicated()]))
    if duplicated:
        problems.append(f"{len(duplicated)} id(s) appear more than once: {listing(duplicated)}.")
    present = set(present)
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing:
        problems.append(f"{len(missing)} test id(s) are missing: {listing(missing)}.")
    if extra:
        problems.append(f"{len(extra)} id(s) are not in the test set: {listing(extra)}.")
    if len(cells) != len(expected):
        problems.append(f"The file has {len(cells)} data rows; the test set has {len(expected)} images.")
    return problems


def _count(n: int) -> str:
    return {2: "two", 3: "three"}.get(n, str(n))


def _header_problems(cells: pd.DataFrame, header: list[str], spec: SubmissionFormat) -> tuple[list[str], pd.DataFrame]:
    """The header's problems, and the data rows (without the header line when there is one)."""
    first = cells.iloc[0].tolist()
    quoted = ",".join(header)
    if first == header:
        return [], cells.iloc[1:]
    if spec.numeric_ids and _INTEGER.fullmatch(first[0]):
        return [f"The header line '{quoted}' is missing: the first line is data."], cells
    if [c.strip() for c in first] == header:
        return [f"The header {','.join(first)!r} has spaces around its names; it must be exactly '{quoted}'."], \
            cells.iloc[1:]
    return [f"The header is {','.join(first)!r}; it must be exactly '{quoted}'."], cells.iloc[1:]


def _id_problems(ids: pd.Series, spec: SubmissionFormat, problems: list[str], expected: set) -> pd.Series:
    """Add the ids' problems to ``problems``; return the ids that can be compared with the test set's (an id
    with spaces around it is one when a test image's name has them)."""
    if not spec.numeric_ids:
        spaced = ids[(ids != ids.str.strip()) & (ids != "") & ~ids.isin(expected)]
        if len(spaced):
            problems.append(f"{len(spaced)} id(s) have spaces around them: {listing(spaced.tolist(), repr)}.")
        return ids[ids != ""]
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
    return ids[ids.str.fullmatch(_INTEGER)].astype(int)


def _label_problems(cells: pd.DataFrame, spec: SubmissionFormat) -> list[str]:
    if spec.label not in SINGLE_LABELS:  # another target kind's cells: its own checks (pipeline.targets)
        return spec.comp.kind.cell_problems(cells, spec)
    labels = cells[1]
    if spec.label == "01":
        bad = labels[(labels != "") & ~labels.isin(["0", "1"])]
        return [f"{len(bad)} label(s) are not 0 or 1: {listing(bad.tolist(), repr)}."] if len(bad) else []
    if spec.label == "class":
        bad = labels[(labels != "") & ~labels.isin(spec.classes)]
        return [f"{len(bad)} label(s) are not class names ({listing(list(spec.classes))}): "
                f"{listing(bad.tolist(), repr)}."] if len(bad) else []
    values = cells.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
    raw = cells.iloc[:, 1:]
    bad = raw[((raw != "") & ~((values >= 0) & (values <= 1))).any(axis=1)]
    if len(bad):
        shown = bad.iloc[:, 0] if spec.label == "probability" else bad.iloc[:, 0] + "..."
        return [f"{len(bad)} label(s) are not probabilities in [0, 1]: {listing(shown.tolist(), repr)}."]
    if spec.label == "probabilities":
        sums = values.sum(axis=1)
        off = sums[(sums - 1).abs() > 1e-3]
        if len(off):
            return [f"{len(off)} row(s) of probabilities do not sum to 1 (e.g. {off.iloc[0]:.4f}): the checker "
                    "rescales them, but they were written wrong."]
    return []


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
                     fmt: str | SubmissionFormat | None = None) -> dict:
    """The submission's scores against the true labels: accuracy always; log-loss for probabilities; ROC-AUC for
    a binary probability; macro F1 for more than two classes.

    Args:
        sub: the submission (CSV file or frame); its ids must be exactly the solution's.
        solution: the true labels (:func:`read_solution`): ``id,label`` (class names, or 0/1 of two classes with
            1 the positive class), or the competition's own submission header.
        fmt: the submission's format; by default (cats versus dogs) 0/1 and probability labels are both
            accepted, and log-loss is reported when any label lies strictly between 0 and 1.
    """
    spec = get_format(fmt or "redux")
    if spec.label not in SINGLE_LABELS:
        return _kind_score(sub, solution, spec)
    truth = read_solution(solution, spec)
    problems = validate_submission(sub, truth.id.tolist(), spec)
    if problems:
        raise SubmissionError(f"The submission does not match the solution: {' '.join(problems)}")
    cells = _text_cells(sub if isinstance(sub, pd.DataFrame) else Path(sub).read_text(encoding="utf-8-sig"))
    ids = cells[spec.header[0]].astype(int) if spec.numeric_ids else cells[spec.header[0]]
    pred = cells.set_index(ids).loc[truth.id]
    y, classes = truth.y.to_numpy(), list(spec.classes)
    if spec.label in ("01", "probability") or (fmt is None and len(classes) == 2):
        p = pred[spec.header[1]].to_numpy(float)
        is_prob = (fmt is not None and spec.probability) or bool(((p > 0) & (p < 1)).any())
        out = {"n": len(pred), "accuracy": float(((p >= 0.5) == (y == 1)).mean()),
               "log_loss": float(log_loss(y, p, labels=[0, 1])) if is_prob else None}
        if spec.metric == "roc_auc" and len(set(y)) == 2:
            out["roc_auc"] = float(roc_auc_score(y, p))
        return out
    if spec.label == "class":
        predicted = pred[spec.header[1]].map({c: i for i, c in enumerate(classes)}).to_numpy(int)
        return {"n": len(pred), "accuracy": float((predicted == y).mean()), "log_loss": None,
                "f1_macro": float(f1_score(y, predicted, average="macro", labels=list(range(len(classes))),
                                           zero_division=0))}
    return {k: v for k, v in score(y, pred[classes].to_numpy(float)).items() if v is not None}


def _kind_score(sub, solution, spec: SubmissionFormat) -> dict:
    """The competition's metric of a submission of another target than one label, against a solution in the
    competition's own header (0/1 label columns, names, grades or values), as MLE-bench's graders compute it."""
    from pipeline.metrics import map_at_k, mean_roc_auc, names_f1, qwk, rmse

    where, truth = _solution_cells(solution)
    header = spec.header
    if [c for c in header if c not in truth.columns]:
        raise SubmissionError(f"{where} has the header {','.join(truth.columns)!r}; it must hold the competition's "
                              f"own columns {','.join(header)}.")
    ids = truth[header[0]].astype(int) if spec.numeric_ids else truth[header[0]]
    problems = validate_submission(sub, ids.tolist(), spec)
    if problems:
        raise SubmissionError(f"The submission does not match the solution: {' '.join(problems)}")
    cells = _text_cells(sub if isinstance(sub, pd.DataFrame) else Path(sub).read_text(encoding="utf-8-sig"))
    pred = cells.set_index(cells[header[0]].astype(int) if spec.numeric_ids else cells[header[0]]).loc[ids]
    y, p, kind = truth[header[1]], pred[header[1]], spec.comp.target.kind
    if spec.label == "columns":
        value = mean_roc_auc(truth[header[1:]].astype(float).to_numpy(), pred[header[1:]].astype(float).to_numpy())
    elif spec.label == "integer":
        value = qwk(y.astype(int), p.astype(int))
    elif spec.label == "number":
        value = rmse(y.astype(float), p.astype(float))
    elif kind == "topk":
        value = map_at_k(y.tolist(), p.str.split(" ").tolist(), spec.comp.target.k)
    else:
        sep = spec.comp.target.separator or " "
        value = names_f1([t.replace(sep, " ") for t in y], [t.replace(sep, " ") for t in p],
                         "macro" if spec.metric == "f1_macro" else "micro")
    return {"n": len(truth), spec.metric: value}


def read_solution(solution: str | Path | pd.DataFrame, fmt: str | SubmissionFormat) -> pd.DataFrame:
    """The true labels as ``id`` (an int where the format's ids are numbers) and ``y`` (the class index; of two
    classes 1 is the positive one), from ``id,label`` (a class name, or 0/1 of two classes) or from the
    competition's own header (``ImageId,Label``; one 0/1 column per class for probabilities, as Kaggle's solution
    files hold them). A ``Usage`` column (Kaggle's Public/Private split) is left out.

    Raises:
        SubmissionError: one line saying what is wrong with the solution (its header, an id, a label).
    """
    spec = get_format(fmt)
    where, cells = _solution_cells(solution)
    cells = cells.drop(columns=[c for c in cells.columns if c == "Usage"])
    classes, header = list(spec.classes), spec.header
    index = {c: i for i, c in enumerate(classes)}
    if len(classes) == 2:
        index = {"0": 0, "1": 1, **index}  # 0/1, 1 = the positive class (the second)
    columns = list(cells.columns)
    if spec.label == "probabilities" and columns[1:] and sorted(columns[1:]) == sorted(classes):
        onehot = cells[classes].apply(pd.to_numeric, errors="coerce")
        bad = cells[~(onehot.isin([0, 1]).all(axis=1) & (onehot.sum(axis=1) == 1))]
        if len(bad):
            raise SubmissionError(f"{where}: {len(bad)} row(s) are not one 1 and 0 elsewhere (ids "
                                  f"{listing(bad.iloc[:, 0].tolist(), repr)}): each row marks its true class.")
        truth = pd.DataFrame({"id": cells.iloc[:, 0], "label": onehot.idxmax(axis=1)})
    elif columns == HEADER or (spec.label != "probabilities" and columns == header):
        truth = pd.DataFrame({"id": cells.iloc[:, 0], "label": cells.iloc[:, 1]})
    else:
        own = f"{header[0]},<one column per class>" if spec.label == "probabilities" else ",".join(header)
        raise SubmissionError(f"{where} has the header {','.join(columns)!r}; it must be id,label (the true class "
                              f"of each id) or the competition's own {own}.")
    wrong = truth.label[~truth.label.isin(list(index))]
    if len(wrong):
        raise SubmissionError(f"{where}: {len(wrong)} label(s) are not classes of {spec.name} "
                              f"({listing(classes)}): {listing(wrong.tolist(), repr)}.")
    if spec.numeric_ids and not truth.id.str.fullmatch(_INTEGER).all():
        bad = truth.id[~truth.id.str.fullmatch(_INTEGER)]
        raise SubmissionError(f"{where}: {len(bad)} id(s) are not whole numbers: {listing(bad.tolist(), repr)}.")
    truth = truth.assign(id=truth.id.astype(int) if spec.numeric_ids else truth.id, y=truth.label.map(index))
    duplicated = truth.id[truth.id.duplicated()]
    if len(duplicated):
        raise SubmissionError(f"{where} lists id(s) more than once: {listing(sorted(set(duplicated)), repr)}.")
    return truth[["id", "y"]].reset_index(drop=True)


def _solution_cells(solution) -> tuple[str, pd.DataFrame]:
    """How messages name the solution, and its text cells under its header."""
    where = "The solution" if isinstance(solution, pd.DataFrame) else f"The solution {solution}"
    try:
        return where, _text_cells(solution if isinstance(solution, pd.DataFrame) else
                                  Path(solution).read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SubmissionError(f"{where} cannot be read as a CSV ({' '.join(str(exc).split())}).") from None


def _text_cells(table: str | pd.DataFrame) -> pd.DataFrame:
    """A CSV's text (or a frame, as it would be written) as text cells under its header."""
    text = csv_text(table) if isinstance(table, pd.DataFrame) else table
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
