"""A competition, described once, as data: where its files come from, how its training images get their labels
and its test images their ids, its classes, metric and submission format, and the augmentation that suits its
images. Built-in specs are ``pipeline/competitions/specs/<name>.toml``; a user's own spec is a TOML file.

``pipeline download --competition NAME|FILE`` resolves a spec (the classes filled in from the data where the
spec says so) and records it as ``data/competition.json``, which train, predict, validate, score and submit read.

Hand-written: no library describes a competition's file layout and submission format; tomllib reads the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.choices import TTA_POLICIES, VIEWS
from pipeline.errors import ConfigError
from pipeline.tomlfiles import NamedFiles

SPECS_DIR = Path(__file__).resolve().parent / "specs"
SPECS = NamedFiles(SPECS_DIR, "competition", "Competition spec", "a spec file", "pipeline competitions")
# the metrics a competition is scored by, computed as MLE-bench's graders compute them (pipeline.metrics)
METRICS = ("accuracy", "log_loss", "roc_auc", "mean_roc_auc", "f1_micro", "f1_macro", "qwk", "rmse", "map_at_k")
TARGET_KINDS = ("single", "multilabel", "ordinal", "regression", "topk")  # what a training image's target is
# how a training image gets its label: its name, its folder, a labels CSV, a pixel CSV, or COCO-style JSON annotations
# (iWildCam: "images" and "annotations" joined into one row per annotation, read as a labels CSV is)
LABELS_FROM = ("name", "folder", "csv", "pixels", "coco")
# how a test image gets its id: its file name as a number, its stem, its name, its row of a pixel file, or the ids a
# test CSV lists (test.csv's id_column; the image file is test.file made from the id)
TEST_IDS = ("number", "stem", "name", "row", "csv")
# how a submission writes its label(s): 01 (binary decision), probability (P(positive)), class (a class name),
# probabilities (one column per class), columns (multilabel: one probability per label column), names (multilabel:
# the label names over their thresholds, space-separated; topk: the k best names, best first), integer (ordinal:
# a whole grade), number (regression: a value clipped to the range)
LABEL_KINDS = ("01", "probability", "class", "probabilities", "columns", "names", "integer", "number")
SORTS = ("number", "text", "none")
VIEW_MARK = "@"  # prob_<class>@<view>: a test-time view's prediction column


@dataclass(frozen=True)
class Target:
    """What a training image's target is (``kind``, one of TARGET_KINDS) and where it comes from.

    The catalogue (data/train.csv) holds it in its ``label`` column whatever the kind: ``single`` and ``topk``: the
    class index (classes[i]); ``ordinal``: the grade 0..grades-1 (the classes are "0".."G-1"); ``regression``: the
    value as a number (the one "class" is the target column's name); ``multilabel``: the indices of the image's
    labels, ascending, space-separated ("" for none; the classes are the labels). ``group`` (when set): the
    catalogue's ``group`` column, kept together in one fold.
    """

    kind: str = "single"
    columns: tuple[str, ...] = ()  # multilabel: the labels file's 0/1 columns, one per label, in submission order
    separator: str | None = None  # multilabel: the label column holds names joined by this (" " for "a b")
    grades: int = 0  # ordinal: the grades are 0..grades-1
    low: float | None = None  # regression: the range predictions are clipped to
    high: float | None = None
    k: int = 5  # topk: how many names a row of the submission lists (MAP@k)
    new: str | None = None  # topk: the class meaning "none of the known ones" (whale: new_whale), placed by threshold
    group: str | None = None  # the labels file's column whose images stay in one fold (PatientID, patient_id)
    ignore: tuple[str, ...] = ()  # the labels file's columns (or files) that are not targets (metadata, annotations)


@dataclass(frozen=True)
class TrainLayout:
    """Which files are training images and how each gets its label (``labels``, one of LABELS_FROM)."""

    labels: str = "name"
    images: str = "**/*"  # a glob of the training images under the unpacked data
    csv: str | None = None  # csv, pixels, coco: the labels file, found anywhere in the data
    id_column: str = "id"
    label_column: str = "label"
    file: str = "{id}"  # csv: an id's image file name
    side: int = 28  # pixels: the images are side x side


@dataclass(frozen=True)
class TestLayout:
    """Which files are test images and how each gets its id (``id``, one of TEST_IDS)."""

    images: str = "**/*"
    id: str = "number"
    csv: str | None = None  # pixels: the test pixels file (ids are its rows, from 1); id = "csv": the test ids file
    id_column: str = "id"  # id = "csv": the test CSV's column of ids (Leaf Classification's id, APTOS's id_code)
    file: str = "{id}"  # id = "csv": an id's image file name ("{id}.jpg"); train and test may share one folder

    @property
    def numeric(self) -> bool:
        """Whether ids are integers (written without leading zeros, sorted as numbers)."""
        return self.id in ("number", "row")


@dataclass(frozen=True)
class SubmissionLayout:
    """The submission file: a built-in cats-vs-dogs ``format``, or ``columns`` and how labels are written."""

    format: str | None = None  # course | kaggle | redux (cats versus dogs)
    columns: tuple[str, ...] = ("id", "label")  # the header (for probabilities: the id column, then the classes)
    label: str = "class"
    positive: str | None = None  # binary: the class a probability (or a 1) stands for; default the second class
    sort: str = "number"
    sample: str | None = None  # the sample submission's file name (sample_submission.csv): its columns and row order


@dataclass(frozen=True)
class Augment:
    """What keeps an image its class: a mirror (photos), an upside-down or turned view (tiles seen from above)."""

    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    tta: str = "hflip"  # the TTA policy (TTA_POLICIES) when predict cannot choose one on the folds


@dataclass(frozen=True)
class Competition:
    """One competition. ``classes`` is filled in when the spec takes them from the data (``classes_from``)."""

    name: str
    title: str = ""
    classes: tuple[str, ...] | None = None
    classes_from: str | None = None  # labels (the labels file's values, sorted) | folders (the class folders, sorted)
    metric: str = "accuracy"
    homepage: str = ""
    kaggle: str | None = None
    urls: tuple[str, ...] = ()
    sha256: dict = field(default_factory=dict)
    target: Target = Target()
    train: TrainLayout = TrainLayout()
    test: TestLayout = TestLayout()
    submission: SubmissionLayout = SubmissionLayout()
    augment: Augment = Augment()

    # ---- the classes ------------------------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        if not self.classes:
            raise ConfigError(f"Competition {self.name} takes its classes from the data; run `pipeline download` "
                              "first.")
        return len(self.classes)

    @property
    def binary(self) -> bool:
        """One label out of two classes (one logit, P(positive) columns)."""
        return self.target.kind in ("single", "topk") and self.n_classes == 2

    @property
    def kind(self):
        """The target kind (:mod:`pipeline.targets`): its loss, columns, scores, post-processing and writer."""
        from pipeline.targets import kind_of

        return kind_of(self)

    @property
    def outputs(self) -> int:
        """The model's outputs: one logit for two classes (the log-odds of the positive one), else one per class;
        one per label (multilabel); one for a number or a grade."""
        return self.kind.outputs

    @property
    def positive(self) -> str:
        """The class a binary probability stands for."""
        return self.submission.positive or self.classes[1]

    def prob_columns(self, view: str | None = None) -> list[str]:
        """The probability columns of a prediction table: ``prob_<positive>`` for two classes, else
        ``prob_<class>`` per class (per label for multilabel; ``prob_grade`` and ``prob_<target column>`` for the
        scaled grade or value); ``@<view>`` for a TTA view (``prob_dog@hflip``: no class name holds ``@``)."""
        at = f"{VIEW_MARK}{view}" if view else ""
        return [f"prob_{c}{at}" for c in self.kind.names()]

    def policy_columns(self, policy: str | None = None) -> list[list[str]]:
        """The prediction columns a TTA policy averages: the image's, then each view's."""
        return [self.prob_columns(), *(self.prob_columns(v) for v in self.tta_views(policy))]

    def tta_views(self, policy: str | None = None) -> tuple[str, ...]:
        """The views a TTA policy averages with the image itself (default: the spec's own policy): a named policy
        (TTA_POLICIES) or views joined by ``+`` (``hflip+zoom``)."""
        return tta_views(policy or self.augment.tta)

    def allowed_views(self) -> tuple[str, ...]:
        """The views that keep an image of this competition its class: the mirror where the spec allows it,
        upside down and turned where it allows those, and the zoom always."""
        a = self.augment
        views = [("hflip", a.hflip), ("vflip", a.vflip), ("rot90", a.rot90), ("rot180", a.vflip or a.rot90),
                 ("rot270", a.rot90), ("zoom", True), ("zoom-hflip", a.hflip)]
        return tuple(v for v, ok in views if ok)

    def oof_views(self) -> tuple[str, ...]:
        """The views whose out-of-fold predictions training keeps: every view of the spec's TTA policy and every
        view that keeps the class (so ``--tta`` can be chosen on the folds later)."""
        return tuple(dict.fromkeys((*self.tta_views(), *self.allowed_views())))

    # ---- saving -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Competition:
        parts = {"target": Target, "train": TrainLayout, "test": TestLayout, "submission": SubmissionLayout,
                 "augment": Augment}
        values = {k: (parts[k](**{**v, **{t: tuple(v[t]) for t in ("columns", "ignore") if t in v}})
                      if k in parts else v) for k, v in d.items()}
        for key in ("classes", "urls"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def with_classes(self, classes, check: bool = True) -> Competition:
        """The competition with its classes (read off the data for ``classes_from``), checked as a spec's are."""
        comp = dataclasses.replace(self, classes=tuple(classes))
        if check:
            from pipeline.competitions.checks import check_classes

            check_classes(comp, lambda where, why: ConfigError(f"Competition {self.name}: {where} {why} (the "
                                                               f"classes found in the data: {_few(classes)})."))
        return comp

    def class_order(self, names, keep: bool = False) -> tuple[str, ...]:
        """The order of the classes (``names`` sorted, or as listed with ``keep``): the class a label index stands
        for. Of two, the positive one goes second: a binary model's one output is P(label 1)."""
        found = list(dict.fromkeys(names)) if keep else sorted(set(names))
        if len(found) == 2 and self.submission.positive == found[0]:
            found.reverse()
        return tuple(found)


def tta_views(policy: str) -> tuple[str, ...]:
    """The views of a TTA policy: a named one (TTA_POLICIES), or views joined by ``+``; ``none`` is no view."""
    if policy in TTA_POLICIES:
        return TTA_POLICIES[policy]
    views = tuple(policy.split("+")) if policy else ()
    unknown = [v for v in views if v not in VIEWS]
    if policy == "auto" or not views or unknown or len(set(views)) != len(views):
        why = "auto is chosen by predict from the out-of-fold predictions" if policy == "auto" else \
            f"got {policy!r}"
        raise ConfigError(f"--tta must be one of {', '.join(TTA_POLICIES)}, auto, or views joined by '+' "
                          f"({', '.join(VIEWS)}): {why}.")
    return views


def _few(names, n: int = 5) -> str:
    names = list(names)
    return ", ".join(map(repr, names[:n])) + (f" and {len(names) - n} more" if len(names) > n else "")


def tta_name(views) -> str:
    """The policy string of a set of views (``none`` for no view)."""
    return "+".join(views) if views else "none"


# ---- loading a spec ---------------------------------------------------------------------------------------------
def builtin_competitions() -> dict[str, Path]:
    """The competitions shipped with the package, by name."""
    return SPECS.builtin()


def spec_summary(path: Path) -> str:
    """The first comment lines of a spec file (what the competition is), joined."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return " ".join(lines)


def load_competition(name_or_path: str | Path) -> Competition:
    """The built-in competition ``name`` or the spec in a TOML file, checked field by field.

    Raises:
        ConfigError: an unknown name or file, a TOML error, an unknown field, a wrong value, a missing field;
            one line naming the field.
    """
    path, raw = SPECS.load(name_or_path)
    from pipeline.competitions.checks import check_spec

    return check_spec(raw, str(path))


# ---- the competition of a data folder ---------------------------------------------------------------------------
RECORD = "competition.json"
DEFAULT = "course"


def record_competition(data_dir: str | Path, comp: Competition) -> Path:
    """Save the resolved competition in the data folder (``data/competition.json``)."""
    from pipeline.fileio import write_json

    return write_json(Path(data_dir) / RECORD, comp.to_dict())


def run_competition(config: dict) -> Competition:
    """The competition a run trained for (its config.json's ``competition``; the course's without one)."""
    saved = config.get("competition")
    return Competition.from_dict(saved) if saved else load_competition(DEFAULT)


def data_competition(data_dir: str | Path) -> Competition:
    """The competition ``pipeline download`` recorded in the data folder; the course competition for a data folder
    made before competitions were recorded (it held cats and dogs)."""
    path = Path(data_dir) / RECORD
    if not path.exists():
        return load_competition(DEFAULT)
    try:
        return Competition.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); run `pipeline download --competition NAME` again.") from None
