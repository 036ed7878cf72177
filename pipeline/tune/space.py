"""A search space: which recipe fields ``pipeline tune`` samples, over what, and which it fixes.

A TOML file of recipe fields. A table samples the field; a plain value fixes it for every trial::

    lr = {low = 1e-4, high = 1e-2, log = true}   # a float on a log scale
    batch_size = {choices = [16, 32, 64]}         # one of these
    epochs = {low = 10, high = 40, step = 10}     # an integer field: whole numbers
    img_size = 96                                 # fixed

Each built-in recipe has its default space beside it (``pipeline/recipes/spaces/<recipe>.toml``); a recipe
file ``big.toml`` may have ``big.space.toml`` beside it; ``--space FILE`` replaces either.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.recipe import FIELDS, RECIPES_DIR, Recipe, check_fields, load_recipe_file, named_recipes
from pipeline.tomlfiles import NamedFiles, read_toml

SPACES = NamedFiles(RECIPES_DIR / "spaces", "search space", "Search space", "a space file")
KEYS = ("low", "high", "log", "step", "choices")  # what a sampled field's table may hold


@dataclass
class Param:
    """One sampled field: a range (``low``..``high``, maybe on a log scale or in steps) or ``choices``."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None
    integer: bool = False  # the recipe field is an int: whole numbers are sampled

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value) -> bool:
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high \
            and (not self.integer or float(value).is_integer())

    def extremes(self) -> list:
        """The values every sample lies among or between: each choice, or both ends."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


@dataclass
class Space:
    """The sampled fields and the fixed ones; ``source``: the file it came from."""

    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    source: str = ""

    def suggest(self, trial) -> dict:
        """The recipe fields of one trial: the fixed ones and one sample of each sampled one."""
        return self.fixed | {name: p.suggest(trial) for name, p in self.params.items()}

    def recipe_point(self, recipe: str | Path) -> dict:
        """The sampled fields' values in ``recipe`` itself, those the space holds (the study's first trial)."""
        own = Recipe(**load_recipe_file(recipe) | self.fixed).resolved().to_dict()
        return {name: own[name] for name, p in self.params.items() if p.contains(own[name])}


def default_space_file(recipe: str | Path) -> Path:
    """The space a recipe is tuned over unless ``--space`` says otherwise: a built-in recipe's own, or
    ``<stem>.space.toml`` beside a recipe file."""
    if str(recipe) in named_recipes():
        if str(recipe) in SPACES.builtin():
            return SPACES.path(str(recipe))
        raise ConfigError(f"Recipe {recipe} has no built-in search space; give one with --space FILE "
                          f"(e.g. a copy of {SPACES.path(next(iter(SPACES.builtin())))}).")
    beside = Path(recipe).with_suffix(".space.toml")
    if not beside.is_file():
        raise ConfigError(f"Recipe {recipe} has no search space beside it ({beside}); give one with --space FILE.")
    return beside


def load_space(path: str | Path, recipe: str | Path) -> Space:
    """The space in ``path`` for ``recipe``, checked: every field is a recipe field, every table holds a range or
    choices of the field's type, and every end and choice makes a recipe that trains (one line otherwise)."""
    source = f"search space {path}"
    raw = read_toml(path, "Search space")
    space = Space(source=str(path))
    for name, value in raw.items():
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown recipe field {name!r}{hint}.")
        if isinstance(value, dict):
            space.params[name] = _param(name, value, source)
        else:
            space.fixed |= check_fields({name: value}, source)
    if not space.params:
        raise ConfigError(f"{source} samples no field: give at least one a range or choices, e.g. "
                          "lr = {low = 1e-4, high = 1e-2, log = true}.")
    _check_trainable(space, recipe, source)
    return space


def _param(name: str, table: dict, source: str) -> Param:
    unknown = [k for k in table if k not in KEYS]
    if unknown:
        raise ConfigError(f"{source}: {name} has an unknown key {unknown[0]!r}; a sampled field takes "
                          f"{', '.join(KEYS)}.")
    hint = typing.get_type_hints(Recipe)[name]
    numeric = {int, float} & set(typing.get_args(hint) or (hint,))
    if "choices" in table:
        if set(table) - {"choices"}:
            raise ConfigError(f"{source}: {name} takes either choices or low/high, not both.")
        choices = table["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{source}: {name}'s choices must be a non-empty list, got {choices!r}.")
        return Param(name, choices=[check_fields({name: c}, source)[name] for c in choices])
    if not numeric:
        raise ConfigError(f"{source}: {name} is not a number: sample it with choices = [...].")
    if "low" not in table or "high" not in table:
        raise ConfigError(f"{source}: {name} needs both low and high (or choices).")
    integer = int in numeric and float not in numeric
    low, high = (check_fields({name: table[k]}, source)[name] for k in ("low", "high"))
    step, log = table.get("step"), table.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {name}'s log must be true or false, got {log!r}.")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
                             or (integer and not isinstance(step, int))):
        raise ConfigError(f"{source}: {name}'s step must be a {'whole ' if integer else ''}number above 0, "
                          f"got {step!r}.")
    if low > high:
        raise ConfigError(f"{source}: {name} cannot be sampled: low {low} is above high {high}.")
    if log and low <= 0:
        raise ConfigError(f"{source}: {name} cannot be sampled on a log scale from {low}: low must be above 0.")
    if log and step is not None:
        raise ConfigError(f"{source}: {name} takes either log or step, not both.")
    return Param(name, low=low, high=high, log=log, step=step, integer=integer)


def _check_trainable(space: Space, recipe: str | Path, source: str) -> None:
    """ConfigError when an end or choice of a sampled field makes a recipe that cannot train (the recipe's own
    check: ``label_smoothing`` 0.6, ``epochs`` 0, ...)."""
    base = load_recipe_file(recipe) | space.fixed
    try:
        Recipe(**base).resolved()
    except ConfigError as exc:
        raise ConfigError(f"{source}: its fixed fields make no recipe that trains: {exc}") from None
    for name, param in space.params.items():
        for value in param.extremes():
            try:
                dataclasses.replace(Recipe(**base), **{name: value}).resolved()
            except ConfigError as exc:
                raise ConfigError(f"{source}: {name} = {value!r} cannot be sampled: {exc}") from None
