"""A competition spec checked field by field: every field of the kind it must be (a boolean is ``true`` or
``false``, a list a list), every value one the pipeline can use; each refusal is one line naming the field, the
file and what was given.

Hand-written: the spec's few fields are checked against the dataclasses' own type hints; a schema library would
add a dependency to check a dozen fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import string
import types
import typing

from pipeline.choices import TTA_POLICIES
from pipeline.competitions.spec import (
    LABEL_KINDS,
    LABELS_FROM,
    METRICS,
    SORTS,
    TARGET_KINDS,
    TEST_IDS,
    VIEW_MARK,
    Augment,
    Competition,
    SubmissionLayout,
    Target,
    TestLayout,
    TrainLayout,
)
from pipeline.errors import ConfigError

PARTS = {"data": None, "target": Target, "train": TrainLayout, "test": TestLayout, "submission": SubmissionLayout,
         "augment": Augment}
TOP = ("name", "title", "classes", "classes_from", "metric", "homepage")
DATA = ("kaggle", "urls", "sha256")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a spec's name names folders: no '/', no '..'
SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def check_spec(raw: dict, source: str) -> Competition:
    """A Competition from a parsed spec, every field checked (a ConfigError names the field and the file)."""
    def bad(where: str, why: str) -> ConfigError:
        return ConfigError(f"Competition spec {source}: {where} {why}.")

    for key in raw:
        if key not in TOP and key not in PARTS:
            raise bad(f"field {key!r}", _unknown(key, set(TOP) | set(PARTS)))
    hints = typing.get_type_hints(Competition)
    for part, cls in PARTS.items():
        table = raw.get(part, {})
        if not isinstance(table, dict):
            raise bad(f"[{part}]", f"must be a table, got {_given(table)}")
        allowed = DATA if cls is None else tuple(f.name for f in dataclasses.fields(cls))
        part_hints = hints if cls is None else typing.get_type_hints(cls)
        for key, value in table.items():
            if key not in allowed:
                raise bad(f"field {part}.{key}", _unknown(key, allowed))
            _check_kind(f"{part}.{key}", value, part_hints[key], bad)
    for key in TOP:
        if key in raw:
            _check_kind(key, raw[key], hints[key], bad)
    if not raw.get("name"):
        raise bad("field 'name'", "is missing (a short name, e.g. 'cifar-10')")
    data = raw.get("data", {})
    comp = Competition(
        name=raw["name"], title=raw.get("title", raw["name"]),
        classes=tuple(raw["classes"]) if "classes" in raw else None, classes_from=raw.get("classes_from"),
        metric=raw.get("metric", "accuracy"), homepage=raw.get("homepage", ""), kaggle=data.get("kaggle"),
        urls=tuple(data.get("urls", ())), sha256=dict(data.get("sha256", {})),
        target=Target(**{k: tuple(v) if k in ("columns", "ignore") else v for k, v in raw.get("target", {}).items()}),
        train=TrainLayout(**raw.get("train", {})), test=TestLayout(**raw.get("test", {})),
        submission=SubmissionLayout(**{k: tuple(v) if k == "columns" else v
                                       for k, v in raw.get("submission", {}).items()}),
        augment=Augment(**raw.get("augment", {})))
    _check_target(comp, bad)  # before _check_values asks the target kind which submission labels it writes
    _check_values(comp, bad)
    if comp.classes is None and target_classes(comp) is not None:
        comp = dataclasses.replace(comp, classes=target_classes(comp))
    check_classes(comp, bad)
    if comp.classes is not None:  # a binary model's one output is P(label 1): the positive class goes second
        comp = comp.with_classes(comp.class_order(comp.classes, keep=True), check=False)
    return comp


def _check_kind(where: str, value, hint, bad) -> None:
    """A ConfigError unless ``value`` (as TOML gave it) is of the kind the field's type hint says."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = args[0]  # str | None, tuple[str, ...] | None: TOML has no null
    if hint is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif hint is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif hint is float:
        ok, want = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif hint is str:
        ok, want = isinstance(value, str), "a string"
    elif typing.get_origin(hint) is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        want = "a list of strings (e.g. [\"a\", \"b\"])"
    else:  # sha256: file name = digest
        ok = isinstance(value, dict) and all(isinstance(v, str) and SHA256.fullmatch(v) for v in value.values())
        want = "a table of file name = SHA-256 (64 hex digits)"
    if not ok:
        raise bad(f"field {where}", f"must be {want}, got {_given(value)}")


def _given(value) -> str:
    """``'no' (a string)``, ``['none'] (a list)``, ``a table``."""
    if isinstance(value, dict):
        return "a table"
    kind = {bool: "a boolean", str: "a string", list: "a list", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"{shown[:60]} ({kind})"


def _check_values(comp: Competition, bad) -> None:
    if not NAME.fullmatch(comp.name) or ".." in comp.name:
        raise bad("field 'name'", "must be a short name of letters, digits, '.', '_' and '-' (it names folders in "
                  f"the data folder), got {comp.name!r}")
    choices = [("metric", comp.metric, METRICS), ("target.kind", comp.target.kind, TARGET_KINDS),
               ("train.labels", comp.train.labels, LABELS_FROM),
               ("test.id", comp.test.id, TEST_IDS), ("submission.label", comp.submission.label, LABEL_KINDS),
               ("submission.sort", comp.submission.sort, SORTS), ("augment.tta", comp.augment.tta, TTA_POLICIES)]
    for where, value, allowed in choices:
        if value not in allowed:
            raise bad(f"field {where}", f"must be one of {', '.join(allowed)}, got {value!r}")
    if comp.submission.label not in comp.kind.label_kinds:
        raise bad("field submission.label", f"{comp.submission.label!r} does not write a {comp.target.kind} "
                  f"target; use {' or '.join(map(repr, comp.kind.label_kinds))}")
    if comp.classes is None and comp.classes_from not in ("labels", "folders") and target_classes(comp) is None:
        raise bad("field 'classes'", "is missing: list the classes, or set classes_from = 'labels' or 'folders'")
    if comp.train.labels in ("csv", "pixels", "coco"):
        if not comp.train.csv:
            raise bad("field train.csv", f"is missing: labels = {comp.train.labels!r} needs the labels file's name")
        if not comp.train.label_column:
            raise bad("field train.label_column", "is missing: the labels file's column of class names")
    for where, name in (("train.csv", comp.train.csv), ("test.csv", comp.test.csv)):
        if name and (name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name)):
            raise bad(f"field {where}", f"must be a file's name in the download, got {name!r}")
    if comp.train.labels in ("csv", "coco"):
        _check_template(comp.train.file, bad)
    if comp.test.id == "csv":
        if not comp.test.csv or not comp.test.id_column:
            raise bad("field test.csv", "is missing: test.id = 'csv' needs the test ids file's name (and its "
                      "test.id_column)")
        _check_template(comp.test.file, bad, "test.file")
    if comp.train.side < 1:
        raise bad("field train.side", f"must be a number of pixels, got {comp.train.side}")
    if comp.train.labels == "pixels" and (comp.test.id != "row" or not comp.test.csv):
        raise bad("field test.csv", "is missing: pixel images need the test pixels file (and test.id = 'row')")
    if comp.test.id == "row" and comp.train.labels != "pixels":
        raise bad("field test.id", "'row' is for pixel files (train.labels = 'pixels')")
    if comp.submission.format is not None and not NAME.fullmatch(comp.submission.format):
        raise bad("field submission.format", f"must be a short name (letters, digits, '-'), got "
                  f"{comp.submission.format!r}")
    columns = comp.submission.columns
    if not columns or (comp.submission.label not in ("probabilities", "columns") and len(columns) != 2):
        raise bad("field submission.columns", "must name the id column and the label column")
    if not all(columns) or len(set(columns)) != len(columns):
        raise bad("field submission.columns", f"must name different, non-empty columns, got {list(columns)}")


def _check_template(template: str, bad, where: str = "train.file") -> None:
    """``train.file`` (``test.file``) names an image from its id: ``{id}`` (as it is) in a file name, nothing else in
    braces."""
    why = "must be a file name made from the labels file's id, such as '{id}.png' ('{{' for a brace)"
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError:
        raise bad(f"field {where}", f"{why}, got {template!r} (unbalanced braces)") from None
    wrong = [f"{{{f}{'!' + c if c else ''}{':' + s if s else ''}}}" for f, s, c in fields if f != "id" or s or c]
    if wrong or not fields or "/" in template or "\\" in template:
        said = f" ({', '.join(wrong)} is not {{id}})" if wrong else ""
        raise bad(f"field {where}", f"{why}, got {template!r}{said}")


def target_classes(comp: Competition) -> tuple[str, ...] | None:
    """The classes a target kind fixes without reading the data (None: the spec lists them or the data gives them):
    ordinal: the grades "0".."G-1"; multilabel with 0/1 columns: the columns; regression: the target column."""
    t = comp.target
    if t.kind == "ordinal" and t.grades:
        return tuple(str(g) for g in range(t.grades))
    if t.kind == "multilabel" and t.columns:
        return t.columns
    if t.kind == "regression":
        return (comp.train.label_column,)
    return None


def _check_target(comp: Competition, bad) -> None:
    """The [target] table's fields that the data side reads: grades, label columns, range, group, k."""
    t = comp.target
    if t.kind == "ordinal" and t.grades < 2 and not comp.classes:
        raise bad("field target.grades", f"must be 2 or more for an ordinal target (grades 0..G-1), got {t.grades}")
    if t.kind == "multilabel" and bool(t.columns) == bool(t.separator):
        raise bad("field target.columns", "or target.separator (one of the two) must say where a multilabel target's "
                  "labels are: one 0/1 column per label, or names joined by a separator in train.label_column")
    if t.kind != "multilabel" and (t.columns or t.separator):
        raise bad("field target.columns", f"and target.separator are for multilabel targets, not {t.kind!r}")
    if t.kind == "regression" and (t.low is None or t.high is None):
        raise bad("field target.low", "and target.high must both be set: a regression target needs its range (the "
                  "predictions are clipped to it)")
    if t.low is not None and t.high is not None and not t.low < t.high:
        raise bad("field target.low", f"must be below target.high, got {t.low} and {t.high}")
    if t.kind == "topk" and t.k < 1:
        raise bad("field target.k", f"must be 1 or more, got {t.k}")
    if comp.train.labels not in ("csv", "coco") and (t.group or t.kind not in ("single",)):
        raise bad("field target.group" if t.group else "field target.kind", "needs a labels file (train.labels = "
                  "'csv' or 'coco'): only a labels file's rows carry a group or a target other than one class")
    clash = set(t.ignore) & ({*t.columns, comp.train.label_column, comp.train.id_column, t.group} - {None})
    if clash:
        raise bad("field target.ignore", f"names {sorted(clash)[0]!r}, which the spec reads as a target, id or group")


def check_classes(comp: Competition, bad) -> None:
    """The checks a spec's classes must pass: at spec load when it lists them, again when they are read off the
    data (``classes_from``)."""
    classes, sub = comp.classes, comp.submission
    least = 1 if comp.target.kind == "regression" else 2
    if classes is not None and (len(classes) < least or len(set(classes)) != len(classes) or not all(classes)):
        raise bad("field 'classes'", f"must list {'two' if least == 2 else 'one'} or more different class names, got "
                  f"{list(classes)}")
    marked = [c for c in classes or () if VIEW_MARK in c]
    if marked:
        raise bad("field 'classes'", f"holds {marked[0]!r}: class names cannot contain {VIEW_MARK!r}, which marks a "
                  "test-time view in the prediction columns (prob_dog@hflip); rename the class")
    if sub.label in ("01", "probability") and classes is not None and len(classes) != 2:
        raise bad("field submission.label", f"{sub.label!r} is for two classes, and this competition has "
                  f"{len(classes)}; use 'class' or 'probabilities'")
    if sub.positive is not None and sub.label == "probabilities":
        raise bad("field submission.positive", "is for a submission of one label per image; 'probabilities' "
                  "writes every class")
    if sub.positive is not None and classes and sub.positive not in classes:
        raise bad("field submission.positive", f"{sub.positive!r} is not one of the classes ({', '.join(classes)})")


def _unknown(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"is unknown{hint}; the fields are {', '.join(sorted(allowed))}"
