"""Submission formats and the frames written in them.

Three cats-versus-dogs formats share the header ``id,label``:

- ``course``: the course competition 猫狗大战; label 1 = dog, 0 = cat; test ids from 0.
- ``kaggle``: Kaggle "Dogs vs. Cats" (2013); the same 0/1 labels; test ids from 1.
- ``redux``: Kaggle "Dogs vs. Cats Redux"; label = P(dog), clipped to [eps, 1-eps] for log-loss.

Every other competition's format comes from its spec (:func:`format_for`): its header, how the label is
written (a class name, P(positive), or one probability column per class) and how ids are sorted.

Validating, writing and scoring a submission is :mod:`pipeline.predict.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.catalog import TEST_ID, id_from_name
from pipeline.errors import SubmissionError
from pipeline.fileio import read_id_csv

HEADER = ["id", "label"]
SAMPLE = "sample_submission.csv"  # the competition's sample submission, as the data folder holds it
SINGLE_LABELS = ("01", "probability", "class", "probabilities")  # written here; other label kinds by their kind
FLOAT_FORMAT = "%.6f"
_MAX_LISTED = 5


@dataclass(frozen=True)
class SubmissionFormat:
    """One competition's submission format.

    Args:
        label: how the label is written: ``01`` (1 = the positive class), ``probability`` (P(positive)),
            ``class`` (a class name) or ``probabilities`` (one column per class, in class order).
        strips_bom: the competition's checker ignores a UTF-8 byte-order mark (see the validation notes).
        columns: the header; for ``probabilities``, the id column (the classes follow).
        sort: rows by ``number`` (ids as integers), ``text`` or ``none`` (the test catalogue's order).
        numeric_ids: ids are integers (written without leading zeros).
    """

    name: str
    description: str
    label: str = "01"
    strips_bom: bool = False
    columns: tuple[str, ...] = ("id", "label")
    classes: tuple[str, ...] = ("cat", "dog")
    positive: str = "dog"
    sort: str = "number"
    numeric_ids: bool = True
    metric: str = "accuracy"  # what the competition scores it by
    comp: object = field(default=None, compare=False, repr=False)  # the competition (kinds other than one label)
    order: tuple = field(default=(), compare=False, repr=False)  # the sample submission's ids: the rows' order

    @property
    def probability(self) -> bool:
        """Labels are probabilities (scored by log-loss or ROC-AUC), not decisions."""
        return self.label in ("probability", "probabilities", "columns")

    @property
    def header(self) -> list[str]:
        if self.label == "probabilities" or (self.label == "columns" and len(self.columns) < 2):
            return [self.columns[0], *self.classes]
        return list(self.columns)

    @property
    def prob_columns(self) -> list[str]:
        """The prediction columns it is written from: ``prob_<positive>`` for two classes, else one per class
        (another target kind: its own, :meth:`pipeline.competitions.spec.Competition.prob_columns`)."""
        if self.comp is not None and self.label not in SINGLE_LABELS:
            return self.comp.prob_columns()
        return [f"prob_{self.positive}"] if len(self.classes) == 2 else [f"prob_{c}" for c in self.classes]


def _named_formats() -> dict[str, SubmissionFormat]:
    """The formats the built-in specs name (``submission.format``: course, kaggle, redux), by that name."""
    from pipeline.competitions.spec import builtin_competitions, load_competition

    named = {c.submission.format: format_for(c) for c in map(load_competition, builtin_competitions().values())
             if c.submission.format}
    return dict(sorted(named.items()))


def _as_named(comp):
    """A competition recorded (data/competition.json) before the cats-versus-dogs formats were read off their
    specs held the format's name alone: it gets the submission layout of the built-in spec of that name."""
    import dataclasses

    from pipeline.competitions.spec import builtin_competitions, load_competition

    sub = comp.submission
    if sub.format is None or sub.positive is not None:
        return comp
    named = [c for c in map(load_competition, builtin_competitions().values()) if c.submission.format == sub.format]
    return dataclasses.replace(comp, submission=named[0].submission) if named else comp


def format_for(comp, data_dir: str | Path | None = None) -> SubmissionFormat:
    """The submission format of a competition (:class:`pipeline.competitions.Competition`): with ``data_dir``, its
    sample submission there (``sample_submission.csv``), when the competition ships one, fixes the header and the
    rows' order (RANZCR's sample has 9 of the 11 training columns: exactly those are written)."""
    comp = _as_named(comp)
    sub = comp.submission
    if sub.label in ("01", "probability") and comp.n_classes != 2:  # a record written before the classes were checked
        raise SubmissionError(f"Competition {comp.name} writes one {sub.label!r} label per image, which is for two "
                              f"classes, but it has {comp.n_classes}: set submission.label to 'class' or "
                              "'probabilities' in its spec and download it again.")
    columns, order = tuple(sub.columns), ()
    sample = _sample(comp, data_dir)
    if sample is not None:
        columns, order = tuple(sample.columns), tuple(sample.iloc[:, 0])
        if sub.label == "probabilities":
            columns = columns[:1]
    if sub.label == "probabilities" or (sub.label == "columns" and len(columns) < 2):
        header = ",".join([columns[0], "<one column per class>"])
    else:
        header = ",".join(columns)
    unknown = [c for c in columns[1:] if sub.label == "columns" and c not in comp.classes]
    if unknown:
        raise SubmissionError(f"Competition {comp.name}'s submission has the column {unknown[0]!r}, which is not one "
                              f"of its labels ({listing(list(comp.classes))}): check the spec's target.columns.")
    positive = comp.positive if len(comp.classes) > 1 else comp.classes[0]
    # Kaggle's checker strips a byte-order mark; the course site's (no Kaggle slug) may not
    return SubmissionFormat(name=sub.format or comp.name, description=f"{comp.title}: {header}", label=sub.label,
                            strips_bom=comp.kaggle is not None or sub.format is None,
                            columns=columns, classes=tuple(comp.classes), positive=positive,
                            sort=sub.sort, numeric_ids=comp.test.numeric, metric=comp.metric, comp=comp, order=order)


def _sample(comp, data_dir) -> pd.DataFrame | None:
    """The competition's sample submission in the data folder (its ids as text), or None."""
    if data_dir is None:
        return None
    path = Path(data_dir) / SAMPLE
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path} cannot be read as a CSV ({exc}); copy the competition's sample submission "
                              "again or remove it.") from None


FORMATS: dict[str, SubmissionFormat] = _named_formats()  # course, kaggle, redux: read off their specs


def get_format(name: str | SubmissionFormat) -> SubmissionFormat:
    """The format called ``name`` (a format is returned as it is).

    Args:
        name: one of the keys of ``FORMATS``, or a SubmissionFormat.
    """
    if isinstance(name, SubmissionFormat):
        return name
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


def read_test_ids(test_csv: str | Path, numeric: bool = True) -> list:
    """The ids of the test catalogue ``data/test.csv`` (``id,path``), sorted.

    Every id, including the photos the catalogue marks unreadable (``readable`` False): the
    competition expects a row for each of them all the same.

    Args:
        test_csv: the catalogue written by ``pipeline download``.
        numeric: the ids are integers (cats versus dogs, CIFAR-10, ...); else text (file names, hex ids).
    """
    test_csv = Path(test_csv)
    if not test_csv.exists():
        raise SubmissionError(f"{test_csv} does not exist; run `pipeline download` to catalogue the test images.")
    df = read_id_csv(test_csv)
    if "id" not in df.columns:
        raise SubmissionError(f"{test_csv} has no 'id' column; rebuild it with `pipeline download`.")
    if not numeric:
        ids = df.id.fillna("")
        if (ids == "").any() or ids.duplicated().any():
            raise SubmissionError(f"{test_csv} lists an empty or a repeated id; rebuild it with `pipeline download`.")
        if ids.empty:
            raise SubmissionError(f"{test_csv} lists no test images; check the test download and catalogue it again.")
        return sorted(ids.tolist())
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


def make_submission(probs: pd.DataFrame, fmt: str | SubmissionFormat, *, threshold: float = 0.5,
                    eps: float = 0.005, fitted=None) -> pd.DataFrame:
    """Turn predictions into a submission frame in ``fmt``, its rows in the format's order.

    Args:
        probs: one row per test image with ``id`` and the format's prediction columns (``prob_dog``: P(positive)
            of two classes; else ``prob_<class>`` for each class), in the test catalogue's order.
        fmt: a format name (see ``FORMATS``) or a competition's format (:func:`format_for`).
        threshold: P(positive) at or above which the label is the positive class (0/1 and class formats of two
            classes); in (0, 1).
        eps: probabilities are clipped to [eps, 1 - eps] (one probability), or each class to at least
            eps / (K - 1) and the rows made to sum to 1 (one column per class); in [0, 0.5).
        fitted: the post-processing fitted on the out-of-fold predictions (:class:`pipeline.targets.base.Fitted`:
            thresholds, cut points), for the label kinds of other targets than one label.
    """
    spec = get_format(fmt)
    if not 0 < threshold < 1:
        raise SubmissionError(f"--threshold must lie strictly between 0 and 1, not {threshold}; the usual is 0.5.")
    if not 0 <= eps < 0.5:
        raise SubmissionError(f"--eps must lie in [0, 0.5), not {eps}; the usual is 0.005.")
    missing = [c for c in ("id", *spec.prob_columns) if c not in probs.columns]
    if missing:
        raise SubmissionError(f"The predictions lack column(s) {', '.join(missing)}; expected "
                              f"{', '.join(['id', *spec.prob_columns])}.")
    values = probs[spec.prob_columns].astype(float)
    if not ((values >= 0) & (values <= 1)).all().all():
        raise SubmissionError("Some predicted probabilities are missing or outside [0, 1]; check the model output.")
    ids = _ids(probs.id, spec)
    frame = pd.DataFrame({spec.header[0]: ids})
    written = _labels(values, spec, threshold, eps) if spec.label in SINGLE_LABELS else \
        spec.comp.kind.written(values.to_numpy(), spec, fitted)
    for column, cells in written.items():
        frame[column] = cells
    if spec.order:
        position = {str(i): n for n, i in enumerate(spec.order)}
        frame = frame.iloc[np.argsort(frame[spec.header[0]].astype(str).map(position).fillna(len(position))
                                      .to_numpy(), kind="stable")]
    elif spec.sort == "number":
        frame = frame.sort_values(spec.header[0], kind="stable")
    elif spec.sort == "text":
        frame = frame.iloc[np.argsort(frame[spec.header[0]].astype(str).to_numpy(), kind="stable")]
    return frame.reset_index(drop=True)


def _ids(ids: pd.Series, spec: SubmissionFormat) -> np.ndarray:
    if not spec.numeric_ids:
        return ids.astype(str).to_numpy()
    numbers = pd.to_numeric(ids, errors="coerce")
    if not (numbers % 1 == 0).all():
        raise SubmissionError("Every prediction id must be an integer, the number in the test image's file name.")
    return numbers.to_numpy(np.int64)


def _labels(values: pd.DataFrame, spec: SubmissionFormat, threshold: float, eps: float) -> dict[str, np.ndarray]:
    """The label column(s) of a submission, by name."""
    p = values.to_numpy()
    label_column = spec.header[1]
    if spec.label == "01":
        return {label_column: (p[:, 0] >= threshold).astype(int)}
    if spec.label == "probability":
        return {label_column: np.clip(p[:, 0], eps, 1 - eps)}
    if spec.label == "class":
        if p.shape[1] == 1:
            other = next(c for c in spec.classes if c != spec.positive)
            return {label_column: np.where(p[:, 0] >= threshold, spec.positive, other)}
        return {label_column: np.asarray(spec.classes, dtype=object)[p.argmax(axis=1)]}
    if p.shape[1] == 1:  # two classes, one column each: P(negative), P(positive)
        p = np.column_stack([1 - p[:, 0], p[:, 0]])
    floor = eps / max(1, len(spec.classes) - 1)  # at most eps of probability spread over the wrong classes
    clipped = np.clip(p, floor, 1)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return dict(zip(spec.classes, clipped.T, strict=True))


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
