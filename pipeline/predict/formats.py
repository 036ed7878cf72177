"""Submission formats (``id,label`` CSV files) and the frames written in them.

Three formats share the header ``id,label``:

- ``course``: the course competition 猫狗大战; label 1 = dog, 0 = cat; test ids from 0.
- ``kaggle``: Kaggle "Dogs vs. Cats" (2013); the same 0/1 labels; test ids from 1.
- ``redux``: Kaggle "Dogs vs. Cats Redux"; label = P(dog), clipped to [eps, 1-eps] for log-loss.

Validating, writing and scoring a submission is :mod:`pipeline.predict.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.catalog import TEST_ID, id_from_name
from pipeline.errors import SubmissionError

HEADER = ["id", "label"]
FLOAT_FORMAT = "%.6f"
_MAX_LISTED = 5


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
    found = id_from_name(name)
    if found is None:
        raise SubmissionError(f"Cannot read a test id from the file name {name!r}: test images must be "
                              "named <number>.<ext>, e.g. 12.jpg.")
    return found


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
    bad = df.id[~df.id.fillna("").str.fullmatch(TEST_ID)].tolist()
    if bad:
        raise SubmissionError(f"{test_csv} has non-integer ids ({listing(bad, repr)}); "
                              "rebuild it with `pipeline download`.")
    ids = df.id.astype(int)
    if ids.duplicated().any():
        raise SubmissionError(f"{test_csv} lists ids more than once ({listing(sorted(set(ids[ids.duplicated()])))}); "
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


def csv_text(sub: pd.DataFrame) -> str:
    """The CSV text of ``sub`` as written: no index, floats with six decimals, integers as is."""
    return sub.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def listing(values: list, fmt=str) -> str:
    """``1, 2, 3, 4, 5 and 7 more``."""
    shown = ", ".join(fmt(v) for v in values[:_MAX_LISTED])
    return shown + (f" and {len(values) - _MAX_LISTED} more" if len(values) > _MAX_LISTED else "")
