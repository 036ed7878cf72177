"""Independent checkers of each competition's submission file, written from the competitions' published rules.

Nothing here comes from ``pipeline/``: a test that checks the pipeline's submission with these functions checks it
against a second reading of each competition's format, not against the pipeline's own.

``check_submission(competition, csv_path, test_ids, classes)`` returns the problems found (an empty list: valid).
``score(competition, csv_path, truth)`` computes the competition's metric against a ``id,label`` truth frame.

Formats (header; one row per test id; label):

==================================  ======================  ============================================  ==========
competition                         header                  label                                         metric
==================================  ======================  ============================================  ==========
cifar-10                            id,label                a class name; ids ints, ascending             accuracy
digit-recognizer                    ImageId,Label           an integer 0-9; ImageId 1..N in order         accuracy
dog-breed-identification            id,<sorted classes>     a probability per class, row sums to 1        log-loss
plant-seedlings-classification      file,species            a class name; ids are file names (.png)       F1 micro
aerial-cactus-identification        id,has_cactus           a probability in [0, 1]; ids are file names   ROC-AUC
dogs-vs-cats                        id,label                0 or 1 (1 = dog); ids ints, ascending         accuracy
dogs-vs-cats-redux-kernels-edition  id,label                a probability in [0, 1] (of dog); ascending   log-loss
course                              id,label                0 or 1 (1 = dog)                              accuracy
==================================  ======================  ============================================  ==========

Not a test module: nothing here is collected by pytest. ``python tests/submission_checks.py`` runs a self-check.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CLIP = 1e-15  # Kaggle's log-loss replaces p by max(min(p, 1 - 1e-15), 1e-15)
SUM_TOLERANCE = 1e-3  # dog-breed: each row's probabilities sum to 1 within this
_INT = re.compile(r"[0-9]+")
_SHOW = 5  # examples quoted per problem


@dataclass(frozen=True)
class Format:
    """One competition's submission format.

    ``label`` is None where there is one column per class (named by the sorted class names). ``kind``: "class" (a
    class name), "digit" (an integer 0-9), "binary" (0 or 1), "probability" (a number in [0, 1]) or
    "class_probabilities" (one probability per class). ``int_ids``: ids are integers (None: integers when the test
    ids given are all Python ints). ``ascending``: rows in ascending numeric id order, as the sample file has them.
    """

    id: str
    label: str | None
    kind: str
    int_ids: bool | None
    ascending: bool
    metric: str


FORMATS: dict[str, Format] = {
    "cifar-10": Format("id", "label", "class", True, True, "accuracy"),
    "digit-recognizer": Format("ImageId", "Label", "digit", True, True, "accuracy"),
    "dog-breed-identification": Format("id", None, "class_probabilities", False, False, "multiclass_log_loss"),
    "plant-seedlings-classification": Format("file", "species", "class", False, False, "f1_micro"),
    "aerial-cactus-identification": Format("id", "has_cactus", "probability", False, False, "roc_auc"),
    "dogs-vs-cats": Format("id", "label", "binary", True, True, "accuracy"),
    "dogs-vs-cats-redux-kernels-edition": Format("id", "label", "probability", True, True, "binary_log_loss"),
    "course": Format("id", "label", "binary", None, False, "accuracy"),
}

# binary competitions whose truth may be given by class name: the class that is 1
POSITIVE = {"dogs-vs-cats": "dog", "dogs-vs-cats-redux-kernels-edition": "dog", "course": "dog",
            "aerial-cactus-identification": "1"}


def _format(competition: str) -> Format:
    try:
        return FORMATS[competition]
    except KeyError:
        raise ValueError(f"unknown competition {competition!r}; known: {', '.join(FORMATS)}") from None


def _few(items) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_ids(fmt: Format, test_ids) -> bool:
    if fmt.int_ids is not None:
        return fmt.int_ids
    return len(test_ids) > 0 and all(_is_int(t) for t in test_ids)


def _key(value, as_int: bool):
    """An id as compared: an int for integer ids (``None`` when the text is not one), else the text itself."""
    if not as_int:
        return str(value)
    if _is_int(value):
        return int(value)
    text = str(value)
    return int(text) if _INT.fullmatch(text) else None


def expected_header(competition: str, classes) -> list[str]:
    fmt = _format(competition)
    if fmt.label is None:
        return [fmt.id, *sorted(str(c) for c in classes)]
    return [fmt.id, fmt.label]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_submission(competition: str, csv_path, test_ids, classes) -> list[str]:
    """The problems of ``csv_path`` as a submission to ``competition`` (an empty list: valid).

    ``test_ids``: every test id (ints or strings; ids are compared as strings, integer ids as integers).
    ``classes``: the class names (a "class" label must be one of them; dog-breed's columns are them, sorted).
    """
    fmt = _format(competition)
    path = Path(csv_path)
    as_int = _int_ids(fmt, test_ids)
    expected_ids = [_key(t, as_int) for t in test_ids]
    if None in expected_ids:
        raise ValueError(f"{competition} has integer ids, but test_ids holds "
                         f"{_few(t for t, k in zip(test_ids, expected_ids, strict=True) if k is None)}")
    classes = [str(c) for c in classes]
    header_wanted = expected_header(competition, classes)

    try:
        raw = path.read_bytes()
    except OSError as e:
        return [f"cannot read {path}: {e}"]
    problems: list[str] = []
    if raw.startswith(b"\xef\xbb\xbf"):
        problems.append("the file starts with a UTF-8 byte-order mark")
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [*problems, f"not UTF-8 text: {e}"]
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return [*problems, "the file is empty"]

    header, body = rows[0], rows[1:]
    if header != header_wanted:
        shown = header if len(header) <= 12 else [*header[:12], "..."]
        wanted = header_wanted if len(header_wanted) <= 12 else [*header_wanted[:12], "..."]
        problems.append(f"header is {','.join(shown)!r}, expected {','.join(wanted)!r}")
        if len(header) != len(header_wanted):
            return problems

    blank = [n for n, r in enumerate(body, start=2) if not r]
    if blank:
        problems.append(f"blank lines: {_few(blank)}")
    ragged = [n for n, r in enumerate(body, start=2) if r and len(r) != len(header_wanted)]
    if ragged:
        problems.append(f"rows with other than {len(header_wanted)} fields on lines {_few(ragged)}")
    body = [r for r in body if len(r) == len(header_wanted)]

    # ids: each test id exactly once, nothing else
    keys = [_key(r[0], as_int) for r in body]
    not_int = [r[0] for r, k in zip(body, keys, strict=True) if k is None]
    if not_int:
        problems.append(f"ids that are not integers: {_few(not_int)}")
    keys = [k for k in keys if k is not None]
    seen: set = set()
    duplicated = sorted({k for k in keys if k in seen or seen.add(k)}, key=str)
    if duplicated:
        problems.append(f"ids listed more than once: {_few(duplicated)}")
    expected = set(expected_ids)
    missing = sorted(expected - seen, key=lambda k: (str(type(k)), k))
    extra = sorted(seen - expected, key=lambda k: (str(type(k)), k))
    if missing:
        problems.append(f"{len(missing)} test ids missing: {_few(missing)}")
    if extra:
        problems.append(f"{len(extra)} ids that are not test ids: {_few(extra)}")
    if fmt.ascending and as_int and not not_int and keys != sorted(keys):
        first = next(i for i in range(1, len(keys)) if keys[i] < keys[i - 1])
        problems.append(f"{fmt.id} not in ascending order (as the sample submission): {keys[first - 1]} is followed "
                        f"by {keys[first]}")
    if competition == "digit-recognizer" and not problems and keys != list(range(1, len(keys) + 1)):
        problems.append(f"ImageId must run 1..{len(keys)} in order")

    # labels
    if fmt.kind == "class":
        allowed = set(classes)
        bad = sorted({r[1] for r in body if r[1] not in allowed})
        if bad:
            problems.append(f"{fmt.label} values that are not classes ({', '.join(classes)}): {_few(bad)}")
    elif fmt.kind == "digit":
        bad = sorted({r[1] for r in body if not re.fullmatch(r"[0-9]", r[1])})
        if bad:
            problems.append(f"{fmt.label} values that are not an integer 0-9: {_few(bad)}")
    elif fmt.kind == "binary":
        bad = sorted({r[1] for r in body if r[1] not in ("0", "1")})
        if bad:
            problems.append(f"{fmt.label} values that are not 0 or 1: {_few(bad)}")
    elif fmt.kind == "probability":
        bad = sorted({r[1] for r in body if (p := _number(r[1])) is None or not 0 <= p <= 1})
        if bad:
            problems.append(f"{fmt.label} values that are not a probability in [0, 1]: {_few(bad)}")
    elif fmt.kind == "class_probabilities":
        not_numbers, negative, off = set(), [], []
        for r in body:
            values = [_number(v) for v in r[1:]]
            not_numbers.update(v for v, p in zip(r[1:], values, strict=True) if p is None)
            if any(p is None for p in values):
                continue
            if any(p < 0 for p in values):
                negative.append(r[0])
            if abs(sum(values) - 1) > SUM_TOLERANCE:
                off.append(r[0])
        if not_numbers:
            problems.append(f"probabilities that are not finite numbers: {_few(sorted(not_numbers))}")
        if negative:
            problems.append(f"{len(negative)} rows with negative probabilities: {_few(negative)}")
        if off:
            problems.append(f"{len(off)} rows whose probabilities do not sum to 1 (within {SUM_TOLERANCE}): "
                            f"{_few(off)}")
    return problems


def _aligned(fmt: Format, csv_path, truth: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """The submission's rows in the order of ``truth``'s ids, and those ids' true labels."""
    if list(truth.columns[:2]) != ["id", "label"]:
        raise ValueError(f"truth must have columns id,label, not {list(truth.columns)}")
    sub = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    as_int = fmt.int_ids if fmt.int_ids is not None else all(_is_int(t) for t in truth["id"])
    sub_keys = [_key(v, as_int) for v in sub[fmt.id]]
    truth_keys = [_key(v, as_int) for v in truth["id"]]
    if None in sub_keys or None in truth_keys or len(set(sub_keys)) != len(sub_keys):
        raise ValueError(f"{csv_path}: ids are not unique {'integers' if as_int else 'strings'}")
    if set(sub_keys) != set(truth_keys):
        missing, extra = set(truth_keys) - set(sub_keys), set(sub_keys) - set(truth_keys)
        raise ValueError(f"{csv_path}: ids differ from the truth's (missing {_few(missing)}, extra {_few(extra)})")
    sub.index = pd.Index(sub_keys, dtype=object)
    return sub.loc[pd.Index(truth_keys, dtype=object)].reset_index(drop=True), truth["label"].tolist()


def _binary_truth(competition: str, labels: list, positive: str | None) -> np.ndarray:
    values = {str(v) for v in labels}
    if values <= {"0", "1"}:
        return np.array([int(str(v)) for v in labels])
    positive = positive if positive is not None else POSITIVE.get(competition)
    if positive is None or (positive not in values and len(values) > 1):
        raise ValueError(f"cannot tell the positive class among {sorted(values)}; pass positive=")
    return np.array([int(str(v) == positive) for v in labels])


def score(competition: str, csv_path, truth: pd.DataFrame, *, positive: str | None = None) -> float:
    """The competition's metric of ``csv_path`` against ``truth`` (``id,label``, label the class name).

    accuracy (cifar-10, digit-recognizer, dogs-vs-cats, course), micro-averaged F1 (plant seedlings; equals
    accuracy), multi-class log-loss with rows rescaled to sum 1 then clipped to [1e-15, 1 - 1e-15] (dog breed),
    binary log-loss with the same clipping (dogs-vs-cats redux), ROC-AUC (aerial cactus). For binary competitions
    ``truth`` labels may be 0/1 or class names; ``positive`` names the class that is 1 (default: "dog", or "1").
    The submission should pass :func:`check_submission` first; ids that differ from the truth's raise ValueError.
    """
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    fmt = _format(competition)
    sub, labels = _aligned(fmt, csv_path, truth)
    if fmt.metric == "multiclass_log_loss":
        columns = list(sub.columns[1:])
        p = sub[columns].astype(float).to_numpy()
        p = p / p.sum(axis=1, keepdims=True)
        p = np.clip(p, CLIP, 1 - CLIP)
        return float(log_loss([str(v) for v in labels], p, labels=columns))
    if fmt.kind in ("binary", "probability"):
        y = _binary_truth(competition, labels, positive)
        p = sub[fmt.label].astype(float).to_numpy()
        if fmt.metric == "accuracy":
            return float(accuracy_score(y, p.astype(int)))
        if fmt.metric == "roc_auc":
            return float(roc_auc_score(y, p))
        return float(log_loss(y, np.clip(p, CLIP, 1 - CLIP), labels=[0, 1]))
    predicted = sub[fmt.label].astype(str).tolist()
    if fmt.kind == "digit":
        predicted = [str(int(v)) for v in predicted]
    truth_labels = [str(v) for v in labels]
    if fmt.metric == "f1_micro":
        return float(f1_score(truth_labels, predicted, average="micro"))
    return float(accuracy_score(truth_labels, predicted))


# ----------------------------------------------------------------------------------------------------- self-check


def perfect_submission(competition: str, truth: pd.DataFrame, classes, path, *, positive: str | None = None) -> Path:
    """Write the submission that scores best for ``truth`` (rows in the sample file's order: ids ascending)."""
    fmt = _format(competition)
    path = Path(path)
    ids, labels = truth["id"].tolist(), truth["label"].tolist()
    if fmt.int_ids or (fmt.int_ids is None and all(_is_int(t) for t in ids)):
        order = sorted(range(len(ids)), key=lambda i: int(ids[i]))
        ids, labels = [ids[i] for i in order], [labels[i] for i in order]
    if fmt.label is None:
        columns = sorted(str(c) for c in classes)
        frame = pd.DataFrame(0.0, index=range(len(ids)), columns=columns)
        for i, label in enumerate(labels):
            frame.loc[i, str(label)] = 1.0
        frame.insert(0, fmt.id, ids)
    elif fmt.kind in ("binary", "probability"):
        frame = pd.DataFrame({fmt.id: ids, fmt.label: _binary_truth(competition, labels, positive)})
    else:
        frame = pd.DataFrame({fmt.id: ids, fmt.label: [str(v) for v in labels]})
    frame.to_csv(path, index=False)
    return path


def _broken(competition: str, good: Path, classes, tmp: Path) -> dict[str, Path]:
    """Copies of a valid submission with one thing wrong each."""
    fmt = _format(competition)
    lines = good.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    out: dict[str, Path] = {}

    def write(name: str, new_lines: list[str]) -> None:
        out[name] = tmp / f"{competition}-{name}.csv"
        out[name].write_text("\n".join(new_lines) + "\n")

    write("missing id", [header, *rows[:-1]])
    write("duplicated id", [header, *rows, rows[0]])
    write("wrong header", [header.replace(fmt.id, fmt.id.upper(), 1), *rows])
    write("extra id", [header, *rows, ",".join(["999999" if fmt.int_ids else "nonexistent", *rows[0].split(",")[1:]])])
    first = rows[0].split(",")
    bad_label = {"class": "not a class", "digit": "10", "binary": "2", "probability": "1.5",
                 "class_probabilities": "-0.5"}[fmt.kind]
    write("bad label", [header, ",".join([first[0], bad_label, *first[2:]]), *rows[1:]])
    if fmt.kind == "class_probabilities":
        write("columns out of order", [",".join([fmt.id, *reversed(header.split(",")[1:])]), *rows])
        write("rows not summing to 1", [header, ",".join([first[0], *(["0.5"] * (len(first) - 1))]), *rows[1:]])
    if fmt.ascending:
        write("unsorted ids", [header, rows[1], rows[0], *rows[2:]])
    return out


def _self_check() -> None:
    import sys
    import tempfile
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import competition_data as cd

    builders = {"cifar-10": cd.cifar10, "digit-recognizer": cd.digit_recognizer,
                "dog-breed-identification": cd.dog_breed, "plant-seedlings-classification": cd.plant_seedlings,
                "aerial-cactus-identification": cd.aerial_cactus}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cases = []
        for competition, build in builders.items():
            start = time.perf_counter()
            data = build(tmp / competition)
            print(f"{competition:36s} layout built in {time.perf_counter() - start:.2f} s")
            cases.append((competition, data.test_ids, data.classes, data.truth))
            # the competition's own sample submission is valid too
            assert check_submission(competition, data.sample_submission, data.test_ids, data.classes) == [], \
                check_submission(competition, data.sample_submission, data.test_ids, data.classes)
        # the cat/dog formats: 1 = dog, ids from 1 (Kaggle) or 0 (course)
        rng = np.random.default_rng(0)
        for competition, first_id in (("dogs-vs-cats", 1), ("dogs-vs-cats-redux-kernels-edition", 1), ("course", 0)):
            ids = list(range(first_id, first_id + 50))
            truth = pd.DataFrame({"id": ids, "label": rng.choice(["cat", "dog"], size=len(ids))})
            cases.append((competition, ids, ["cat", "dog"], truth))

        for competition, test_ids, classes, truth in cases:
            good = perfect_submission(competition, truth, classes, tmp / f"{competition}.csv")
            problems = check_submission(competition, good, test_ids, classes)
            assert problems == [], (competition, problems)
            value = score(competition, good, truth)
            best = 0.0 if "log_loss" in FORMATS[competition].metric else 1.0
            assert abs(value - best) < 1e-9, (competition, value)
            for what, path in _broken(competition, good, classes, tmp).items():
                problems = check_submission(competition, path, test_ids, classes)
                assert problems, f"{competition}: a submission with a {what} was accepted"
            print(f"{competition:36s} perfect submission accepted (score {value:.4g}), "
                  f"{len(_broken(competition, good, classes, tmp))} broken ones refused")


if __name__ == "__main__":
    _self_check()
