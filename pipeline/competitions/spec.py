"""A competition, described once, as data: where its files come from, how its training images get their labels
and its test images their ids, its classes, metric and submission format, and the augmentation that suits its
images. Built-in specs are ``pipeline/competitions/specs/<name>.toml``; a user's own spec is a TOML file.

``pipeline download --competition NAME|FILE`` resolves a spec (the classes filled in from the data where the
spec says so) and records it as ``data/competition.json``, which train, predict, validate, score and submit read.

Hand-written: no library describes a competition's file layout and submission format; tomllib reads the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from pipeline.choices import TTA_POLICIES, VIEWS
from pipeline.errors import ConfigError

SPECS_DIR = Path(__file__).resolve().parent / "specs"
METRICS = ("accuracy", "log_loss", "roc_auc", "f1_micro", "f1_macro")
LABELS_FROM = ("name", "folder", "csv", "pixels")  # how a training image gets its label
TEST_IDS = ("number", "stem", "name", "row")  # how a test image gets its id
LABEL_KINDS = ("01", "probability", "class", "probabilities")  # how a submission writes its label(s)
SORTS = ("number", "text", "none")


@dataclass(frozen=True)
class TrainLayout:
    """Which files are training images and how each gets its label (``labels``, one of LABELS_FROM)."""

    labels: str = "name"
    images: str = "**/*"  # a glob of the training images under the unpacked data
    csv: str | None = None  # csv, pixels: the labels file, found anywhere in the data
    id_column: str = "id"
    label_column: str = "label"
    file: str = "{id}"  # csv: an id's image file name
    side: int = 28  # pixels: the images are side x side


@dataclass(frozen=True)
class TestLayout:
    """Which files are test images and how each gets its id (``id``, one of TEST_IDS)."""

    images: str = "**/*"
    id: str = "number"
    csv: str | None = None  # pixels: the test pixels file (ids are its rows, from 1)

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
        return self.n_classes == 2

    @property
    def outputs(self) -> int:
        """The model's outputs: one logit for two classes (the log-odds of the positive one), else one per class."""
        return 1 if self.binary else self.n_classes

    @property
    def positive(self) -> str:
        """The class a binary probability stands for."""
        return self.submission.positive or self.classes[1]

    def prob_columns(self, view: str | None = None) -> list[str]:
        """The probability columns of a prediction table: ``prob_<positive>`` for two classes, else
        ``prob_<class>`` per class; ``@<view>`` for a TTA view (``prob_dog@hflip``)."""
        at = f"@{view}" if view else ""
        names = [self.positive] if self.binary else list(self.classes)
        return [f"prob_{c}{at}" for c in names]

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
        parts = {"train": TrainLayout, "test": TestLayout, "submission": SubmissionLayout, "augment": Augment}
        values = {k: (parts[k](**{**v, **({"columns": tuple(v["columns"])} if "columns" in v else {})})
                      if k in parts else v) for k, v in d.items()}
        for key in ("classes", "urls"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def with_classes(self, classes: list[str]) -> Competition:
        return dataclasses.replace(self, classes=tuple(classes))


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


def tta_name(views) -> str:
    """The policy string of a set of views (``none`` for no view)."""
    return "+".join(views) if views else "none"


# ---- loading a spec ---------------------------------------------------------------------------------------------
def builtin_competitions() -> dict[str, Path]:
    """The competitions shipped with the package, by name."""
    return {p.stem: p for p in sorted(SPECS_DIR.glob("*.toml"))}


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
    named = builtin_competitions()
    if str(name_or_path) in named:
        path = named[str(name_or_path)]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            close = difflib.get_close_matches(str(name_or_path), named, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"No competition {str(name_or_path)!r}{hint}: give a spec file or one of "
                              f"{', '.join(named)} (`pipeline competitions` lists them).")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Competition spec {path} is not valid TOML ({exc}).") from None
    return check_spec(raw, str(path))


_PARTS = {"data": None, "train": TrainLayout, "test": TestLayout, "submission": SubmissionLayout, "augment": Augment}
_TOP = {"name", "title", "classes", "classes_from", "metric", "homepage"}
_DATA = {"kaggle", "urls", "sha256"}


def check_spec(raw: dict, source: str) -> Competition:
    """A Competition from a parsed spec, every field checked (a ConfigError names the field and the file)."""
    def bad(where: str, why: str) -> ConfigError:
        return ConfigError(f"Competition spec {source}: {where} {why}.")

    for key in raw:
        if key not in _TOP and key not in _PARTS:
            raise bad(f"field {key!r}", _unknown(key, _TOP | set(_PARTS)))
    for part, cls in _PARTS.items():
        table = raw.get(part, {})
        if not isinstance(table, dict):
            raise bad(f"[{part}]", "must be a table")
        allowed = _DATA if cls is None else {f.name for f in dataclasses.fields(cls)}
        for key in table:
            if key not in allowed:
                raise bad(f"field {part}.{key}", _unknown(key, allowed))
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise bad("field 'name'", "is missing (a short name, e.g. 'cifar-10')")
    data = raw.get("data", {})
    try:
        comp = Competition(
            name=raw["name"], title=raw.get("title", raw["name"]),
            classes=tuple(raw["classes"]) if "classes" in raw else None, classes_from=raw.get("classes_from"),
            metric=raw.get("metric", "accuracy"), homepage=raw.get("homepage", ""), kaggle=data.get("kaggle"),
            urls=tuple(data.get("urls", ())), sha256=dict(data.get("sha256", {})),
            train=TrainLayout(**raw.get("train", {})), test=TestLayout(**raw.get("test", {})),
            submission=SubmissionLayout(**{k: tuple(v) if k == "columns" else v
                                           for k, v in raw.get("submission", {}).items()}),
            augment=Augment(**raw.get("augment", {})))
    except TypeError as exc:
        raise bad("a field", f"has a value of the wrong kind ({exc})") from None
    _check_values(comp, bad)
    return comp


def _check_values(comp: Competition, bad) -> None:
    choices = [("metric", comp.metric, METRICS), ("train.labels", comp.train.labels, LABELS_FROM),
               ("test.id", comp.test.id, TEST_IDS), ("submission.label", comp.submission.label, LABEL_KINDS),
               ("submission.sort", comp.submission.sort, SORTS), ("augment.tta", comp.augment.tta, TTA_POLICIES)]
    for where, value, allowed in choices:
        if value not in allowed:
            raise bad(f"field {where}", f"must be one of {', '.join(allowed)}, got {value!r}")
    if comp.classes is None and comp.classes_from not in ("labels", "folders"):
        raise bad("field 'classes'", "is missing: list the classes, or set classes_from = 'labels' or 'folders'")
    if comp.classes is not None and (len(comp.classes) < 2 or len(set(comp.classes)) != len(comp.classes)
                                     or not all(isinstance(c, str) and c for c in comp.classes)):
        raise bad("field 'classes'", f"must list two or more different class names, got {list(comp.classes)}")
    if comp.train.labels in ("csv", "pixels"):
        if not comp.train.csv:
            raise bad("field train.csv", f"is missing: labels = {comp.train.labels!r} needs the labels file's name")
        if not comp.train.label_column:
            raise bad("field train.label_column", "is missing: the labels file's column of class names")
    if comp.train.labels == "pixels" and (comp.test.id != "row" or not comp.test.csv):
        raise bad("field test.csv", "is missing: pixel images need the test pixels file (and test.id = 'row')")
    if comp.test.id == "row" and comp.train.labels != "pixels":
        raise bad("field test.id", "'row' is for pixel files (train.labels = 'pixels')")
    if comp.submission.format is not None and comp.submission.format not in ("course", "kaggle", "redux"):
        raise bad("field submission.format", f"must be course, kaggle or redux, got {comp.submission.format!r}")
    if comp.submission.label in ("01", "probability") and comp.classes is not None and len(comp.classes) != 2:
        raise bad("field submission.label", f"{comp.submission.label!r} is for two classes")
    if comp.submission.positive is not None and comp.classes and comp.submission.positive not in comp.classes:
        raise bad("field submission.positive", f"{comp.submission.positive!r} is not one of the classes")
    if not comp.submission.columns or (comp.submission.label != "probabilities" and len(comp.submission.columns) != 2):
        raise bad("field submission.columns", "must name the id column and the label column")


def _unknown(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"is unknown{hint}; the fields are {', '.join(sorted(allowed))}"


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
