"""``--time-limit``: the whole run, every fold, finishes inside a budget.

The epochs are chosen before training, from a few timed batches of the first fold, so that each fold's
schedule completes (a cosine that ends at zero, not a run cut in the middle of its schedule); the run
records the epochs it chose in its recipe. The budget only ever lowers the recipe's epochs: to spend it all,
give a large ``--epochs`` with it.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from pipeline.errors import ConfigError
from pipeline.progress import clock

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m(?!s))?(?:(?P<s>{_NUMBER})(?P<unit>s?))?")
SAFETY = 0.9  # of the time left for training: the timed batches are a sample, epochs vary a little
RESERVE_MIN_S = 5.0  # the cross-validation score, the report and the tracker after the last fold


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1h30m`` or a plain number of seconds; a bare number after hours is
    minutes (``1h30`` is 1 h 30 min, as a clock reads it) and after minutes seconds (``2m30``); ConfigError
    otherwise."""
    m = _DURATION.fullmatch(text.strip().lower()) if text and text.strip() else None
    if m is None or not any(m.group("h", "m", "s")):
        raise ConfigError(f"--time-limit takes a duration such as 90s, 30m, 2h or 1h30m, got {text!r}.")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in m.group("h", "m", "s"))
    if m["s"] and not m["unit"] and m["h"] and not m["m"]:
        minutes, seconds = seconds, 0.0  # 1h30: the number after the hours is minutes
    total = 3600 * hours + 60 * minutes + seconds
    if not 0 < total < 30 * 24 * 3600:
        raise ConfigError(f"--time-limit must be more than 0 and less than 30 days, got {text!r}.")
    return total


@dataclass
class Plan:
    """What the budget allows: ``epochs`` per fold, and the figures it was computed from (saved in config.json)."""

    seconds: float  # the budget, for the whole run
    spent: float  # already gone before training (start-up, the image cache, the timing)
    epoch_seconds: float  # one epoch of one fold: training and validation
    fold_extra_seconds: float  # per fold: building the model and the out-of-fold predictions
    folds_per_process: int
    recipe_epochs: int
    epochs: int

    def to_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


def plan_epochs(seconds: float, spent: float, epoch_seconds: float, fold_extra_seconds: float,
                folds_per_process: int, recipe_epochs: int) -> Plan:
    """The most epochs per fold (at most the recipe's) that let every fold finish inside ``seconds``.

    Raises:
        ConfigError: not even one epoch per fold fits (one line, with what one epoch costs here).
    """
    reserve = max(RESERVE_MIN_S, 0.05 * seconds)
    per_fold = (seconds - spent - reserve) * SAFETY / max(1, folds_per_process) - fold_extra_seconds
    epochs = min(recipe_epochs, math.floor(per_fold / max(epoch_seconds, 1e-9)))
    plan = Plan(seconds, spent, epoch_seconds, fold_extra_seconds, folds_per_process, recipe_epochs, max(0, epochs))
    if epochs < 1:
        need = spent + reserve + folds_per_process * (epoch_seconds + fold_extra_seconds) / SAFETY
        raise ConfigError(f"--time-limit {clock(seconds)} is too short: here one epoch of a fold takes about "
                          f"{clock(epoch_seconds)} and {folds_per_process} fold(s) must each train at least one "
                          f"(with {clock(spent)} already spent on start-up and the image cache); give at least "
                          f"{clock(math.ceil(need))}, or train fewer folds (--folds 0), a smaller --img-size or a "
                          "smaller model.")
    return plan


def time_batches(step, loader, n: int) -> float:
    """Seconds one batch of ``loader`` takes through ``step(batch)``, from ``n`` batches after a first one that
    starts the loader's workers and the kernels (not timed). ``n`` is cut to the batches there are."""
    it = iter(loader)
    step(next(it))
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0, timed = time.perf_counter(), 0
    for batch in it:
        if timed == n:
            break
        step(batch)
        timed += 1
    sync()
    return (time.perf_counter() - t0) / max(1, timed) if timed else time.perf_counter() - t0


@dataclass
class FirstEpoch:
    """What the run's first epoch measured, in seconds: what the estimate of the whole run is made from."""

    setup: float  # the fold before its first batch: loaders, model, weights
    first_batch: float  # the first training batch: it starts the loader's workers and the kernels
    batch_seconds: list[float]  # every later training batch of the epoch, one by one
    validation: float  # one pass over the fold's validation photos
    epoch: float  # the whole epoch: training, validation (the EMA's too), checkpoints


@dataclass
class RunEstimate:
    """The expected time of a whole run and what it is made of (seconds)."""

    seconds: float  # from the run's start to its cross-validation score (what `took` reports)
    epoch: float  # one later epoch (no start-up)
    fold_extra: float  # each fold beyond its epochs: loaders and model, the start-up, out-of-fold predictions
    spread: float  # how much the batches' times vary (relative): a busy machine; the estimate's ± at best


def oof_passes(views: int, average: str, average_epochs: int) -> int:
    """Passes over the validation photos a fold makes after its epochs: its out-of-fold predictions as they are
    and under each of ``views`` TTA views, and the validations of weight averaging (``--average``)."""
    return 1 + views + {"none": 0, "swa": 1, "soup": average_epochs - 1}[average]


def estimate_run(m: FirstEpoch, elapsed: float, epochs_left: int, folds_left: int, passes: int) -> RunEstimate:
    """The run's expected seconds, after its first epoch.

    The first batch starts the loader's workers; the epoch's other batches give the steady rate, and a later
    epoch costs the first one without that start-up. Every fold still to start pays its setup and the start-up
    again, and every fold its ``passes`` over the validation photos at its end (each timed as the first epoch's
    validation).

    Args:
        m: the first epoch's timings.
        elapsed: seconds the run has taken so far (start-up, image cache, the first epoch).
        epochs_left: epochs still to train, over every fold of this process (early stopping may skip some).
        folds_left: this process's folds not finished, the current one included.
        passes: :func:`oof_passes`.
    """
    per_batch = statistics.fmean(m.batch_seconds) if m.batch_seconds else m.first_batch
    start_up = max(0.0, m.first_batch - per_batch)
    epoch = max(0.0, m.epoch - start_up)
    at_end = passes * m.validation
    fold_extra = m.setup + start_up + at_end
    left = epochs_left * epoch + at_end + max(0, folds_left - 1) * fold_extra
    spread = statistics.pstdev(m.batch_seconds) / per_batch if len(m.batch_seconds) > 1 and per_batch > 0 else 0.0
    return RunEstimate(elapsed + left, epoch, fold_extra, spread)


def fewest_epochs_left(epochs: int, patience: int, folds_left: int, done: int = 1) -> int:
    """The fewest epochs a run may still train if early stopping ends every fold as soon as it can: after
    ``patience`` epochs without a better validation loss, so at least ``patience + 1`` epochs a fold (``done`` of
    them trained in the current fold). Without early stopping (``patience`` 0), every epoch."""
    least = epochs if patience <= 0 else min(epochs, patience + 1)
    return max(0, least - done) + max(0, folds_left - 1) * least
