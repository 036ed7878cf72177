"""What is learned: the recipe of a run, as a dataclass, and named recipes as TOML files.

A recipe reproduces a score on any machine: exactly on the CPU (given the thread count), and on a GPU up to the
last digits that its precision, TF32 and cuDNN's autotuning move (``--deterministic`` repeats a GPU run bit for bit
on the same GPU). Where and how it runs is ``settings.RunSettings``.
Named recipes ship in ``pipeline/recipes/<name>.toml``; a recipe file holds recipe fields only,
and options given on the command line override it. The resolved recipe is saved in the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pipeline.choices import AUGMENT_PRESETS, AVERAGES, OPTIMIZERS, SCHEDULES
from pipeline.errors import ConfigError
from pipeline.tomlfiles import NamedFiles

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
RECIPES = NamedFiles(RECIPES_DIR, "recipe", "Recipe", listing="pipeline recipes")
MAX_SEED = 4_000_000  # seed * 1000 + fold seeds numpy, whose seeds end at 2**32 - 1
MAX_IMG_SIZE = 1024  # the competitions' photos are at most ~1,050 px; more only upsamples
DEFAULT_RECIPE = "lenet"  # what a run without --recipe starts from: the defaults below, spelled out in lenet.toml


@dataclass
class Recipe:
    """The fields of a recipe; None means "chosen from the architecture" (see :meth:`resolved`)."""

    arch: str = "lenet"
    img_size: int | None = None  # None: 64 for LeNet, the model's pretrained size otherwise
    epochs: int = 20
    batch_size: int = 64  # images per optimizer step, over all processes together
    lr: float | None = None  # None: 1e-3 from scratch, 3e-4 when starting from weights
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # one of OPTIMIZERS
    schedule: str = "cosine"  # one of SCHEDULES: cosine (linear warm-up, cosine decay) | onecycle
    warmup_epochs: float = 1.0
    patience: int = 5  # epochs without a better validation loss before stopping; 0 = never stop early
    augment: str = "light"  # one of AUGMENT_PRESETS
    drop_rate: float = 0.0  # dropout before the classifier of timm models
    pretrained: bool = False
    weights: str | None = None
    weights_partial: bool = False  # load only the tensors of --weights that fit (another variant's), refuse nothing
    seed: int = 0
    # fine-tuning
    layer_decay: float = 1.0  # below 1: each earlier block of a timm model learns at this fraction of the next's lr
    freeze_bn: bool = False  # BatchNorm keeps its (pretrained) statistics: small batches estimate them badly
    # regularisation
    mixup: float = 0.0  # mixup's Beta(alpha, alpha); 0: off
    cutmix: float = 0.0  # cutmix's Beta(alpha, alpha); 0: off
    mix_prob: float = 1.0  # share of batches mixed when mixup or cutmix is on
    label_smoothing: float = 0.0  # targets eps/2 and 1 - eps/2 instead of 0 and 1
    ema: bool = False  # also keep an exponential moving average of the weights; it is used when it scores better
    ema_decay: float = 0.998
    average: str = "none"  # one of AVERAGES: swa (the last epochs' weights) | soup (the best epochs', greedily)
    average_epochs: int = 3  # how many epochs' weights the average may take
    sizes: list[int] | None = None  # progressive resizing: training sizes in equal phases, then img_size

    def resolved(self) -> Recipe:
        """A copy with every ``None`` default filled in and every value checked."""
        # imported here, not at the top: `pipeline --help` reads the recipe's defaults without loading torch
        from pipeline.models import OWN_MODELS, check_arch, default_img_size

        r = dataclasses.replace(self)
        infinite = [f.name for f in dataclasses.fields(r) if isinstance(getattr(r, f.name), float)
                    and not math.isfinite(getattr(r, f.name))]
        if infinite:  # inf and nan pass every comparison below, then break the schedule or the loss
            name = infinite[0]
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(r, name)}.")
        check_arch(r.arch)
        r.img_size = r.img_size if r.img_size is not None else default_img_size(r.arch)  # 0 is a value, refused
        r.lr = r.lr if r.lr is not None else (3e-4 if (r.pretrained or r.weights) else 1e-3)
        for name, allowed in [("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("augment", AUGMENT_PRESETS),
                              ("average", AVERAGES)]:
            if getattr(r, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(r, name)!r}.")
        checks = [("epochs", r.epochs >= 1, "at least 1"), ("batch-size", r.batch_size >= 1, "at least 1"),
                  ("lr", r.lr > 0, "above 0"), ("weight-decay", r.weight_decay >= 0, "zero or more"),
                  ("warmup-epochs", r.warmup_epochs >= 0, "zero or more"),
                  ("patience", r.patience >= 0, "zero or more"), ("drop-rate", 0 <= r.drop_rate < 1, "in [0, 1)"),
                  ("img-size", 32 <= r.img_size <= MAX_IMG_SIZE, f"between 32 and {MAX_IMG_SIZE} pixels"),
                  ("layer-decay", 0 < r.layer_decay <= 1, "in (0, 1]"), ("mixup", r.mixup >= 0, "zero or more"),
                  ("cutmix", r.cutmix >= 0, "zero or more"), ("mix-prob", 0 <= r.mix_prob <= 1, "in [0, 1]"),
                  ("label-smoothing", 0 <= r.label_smoothing < 0.5, "in [0, 0.5)"),
                  ("ema-decay", 0 < r.ema_decay < 1, "in (0, 1)"),
                  ("average-epochs", r.average_epochs >= 2, "at least 2"),
                  ("seed", 0 <= r.seed <= MAX_SEED, f"between 0 and {MAX_SEED:,}")]
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(f"--{name} must be {what}, got {getattr(r, name.replace('-', '_'))}.")
        if r.pretrained and r.weights:
            raise ConfigError("Use either --pretrained or --weights FILE, not both.")
        if r.weights_partial and not r.weights:
            raise ConfigError("--weights-partial says how to load --weights FILE: give the file too.")
        if r.sizes is not None:
            bad = [s for s in r.sizes if not 32 <= s <= r.img_size]
            if bad or not r.sizes:
                raise ConfigError(f"--sizes must list training sizes between 32 and --img-size {r.img_size}, "
                                  f"got {r.sizes}.")
        if r.arch in OWN_MODELS and (r.sizes or r.layer_decay < 1):
            raise ConfigError(f"{r.arch} sizes its classifier from --img-size and has no blocks for layer decay: "
                              "drop --sizes and --layer-decay, or pick a timm architecture.")
        return r

    def size_for_epoch(self, epoch: int) -> int:
        """The training size of ``epoch``: the ``sizes`` phases, then ``img_size`` (progressive resizing)."""
        phases = [*(self.sizes or []), self.img_size]
        if phases[-2:-1] == [self.img_size]:
            phases.pop()
        return phases[min(len(phases) - 1, epoch * len(phases) // max(1, self.epochs))]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of_run(cls, run) -> Recipe:
        """The resolved recipe saved in a run's config.json (``run``: a :class:`pipeline.rundir.RunDir`)."""
        return cls(**{k: v for k, v in run.config()["recipe"].items() if k in FIELDS})


FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def named_recipes() -> dict[str, Path]:
    """The recipes shipped with the package, by name."""
    return RECIPES.builtin()


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe file (its one-line description)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _check_type(name: str, value, source: str):
    """``value`` converted to the type of recipe field ``name``; ConfigError when it cannot be."""
    hint = typing.get_type_hints(Recipe)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if typing.get_origin(t) is list:  # list[int]
            if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return list(value)
            continue
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is not type(None) and isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    names = " or ".join("a list of integers" if typing.get_origin(t) is list else t.__name__
                        for t in allowed if t is not type(None))
    raise ConfigError(f"{source}: {name} must be {names}, got {value!r}.")


def check_fields(fields: dict, source: str) -> dict:
    """``fields`` with every name checked against the recipe and every value against its type."""
    out = {}
    for name, value in fields.items():
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown recipe field {name!r}{hint}; the fields are "
                              f"{', '.join(FIELDS)}.")
        out[name] = _check_type(name, value, source)
    return out


def recipe_file(name_or_path: str | Path) -> Path:
    """The TOML file of a named recipe (``finetune``), or the file given; ConfigError with close names otherwise."""
    return RECIPES.path(name_or_path)


def load_recipe_file(name_or_path: str | Path) -> dict:
    """The fields of a named recipe (``finetune``) or of a TOML file, checked."""
    path, fields = RECIPES.load(name_or_path)
    return check_fields(fields, f"recipe {path}")


def build_recipe(name: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """The recipe ``name`` (a named recipe or a TOML file; None: the defaults) with ``overrides`` on top,
    resolved and checked."""
    fields = load_recipe_file(name) if name is not None else {}
    overrides = check_fields(overrides or {}, "command line")
    if overrides.get("weights") and "pretrained" not in overrides:
        fields["pretrained"] = False  # --weights FILE is the offline form of a recipe's pretrained = true
    fields |= overrides
    return Recipe(**fields).resolved()
