"""What a training run shows while it trains: rich bars on a terminal, one plain line per epoch and per fold
elsewhere (a log file, nohup, a notebook cell), an estimate of the whole run after its first epoch, and a
run-level ETA in both (rich's own ETA needs updates more often than once an epoch).

Only the main process shows anything; ``--no-progress`` shows nothing.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

from pipeline.progress import clock, make_progress, on_terminal, say
from pipeline.train.budget import FirstEpoch, estimate_run, fewest_epochs_left
from pipeline.train.engine import Callback, FitState

_logger = logging.getLogger(__name__)


class RunClock:
    """The run's ETA: the epochs left in this process's folds times the mean seconds of the epochs done (before
    the first ends, the estimate made from its first batches), and what each fold left takes beyond its epochs
    (once :class:`Estimate` has measured it).

    Args:
        epochs_left: epochs this process has still to train, over all its folds.
    """

    def __init__(self, epochs_left: int, folds: int = 0):
        self.start, self.left, self.folds_left = time.perf_counter(), epochs_left, folds
        self.epoch_seconds: list[float] = []
        self.estimate: float | None = None  # seconds an epoch takes, from the first batches
        self.fold_extra = 0.0  # seconds a fold takes beyond its epochs, once the estimate has measured them

    def per_epoch(self) -> float | None:
        return sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else self.estimate

    def eta(self) -> float | None:
        per = self.per_epoch()
        return None if per is None else per * self.left + self.fold_extra * self.folds_left

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def epoch_done(self, seconds: float) -> None:
        self.left = max(0, self.left - 1)
        self.epoch_seconds.append(seconds)

    def fold_done(self, epochs_not_trained: int) -> None:
        """A fold ended (early stopping may end it before its last epoch)."""
        self.left = max(0, self.left - epochs_not_trained)
        self.folds_left = max(0, self.folds_left - 1)


class Estimate(Callback):
    """After the run's first epoch, one line with the expected time of the whole run (:func:`estimate_run`), with
    its uncertainty when the machine is busy enough to make it large.

    Before that line the run's ETA is made from the first batches alone (training only).

    Args:
        folds: the folds this process trains, the current one included.
        passes: passes over the validation photos a fold makes after its epochs (:func:`oof_passes`).
        elapsed: ``elapsed() -> seconds`` the run has taken so far.
        patience: the recipe's early stopping (0: off); with it, the line also says how short the run may be.
    """

    SHOW_SPREAD = 0.15  # a ± below this is not worth a word

    def __init__(self, clock_: RunClock, say_: Callable[[str], None], folds: int, passes: int,
                 elapsed: Callable[[], float], patience: int = 0, after: int = 8):
        self.clock, self.say, self.folds, self.passes, self.elapsed = clock_, say_, folds, passes, elapsed
        self.patience, self.after = patience, after
        self.created, self.fit_start, self.ends, self.done = time.perf_counter(), None, [], False

    def on_fit_start(self, state: FitState) -> None:
        self.fit_start = time.perf_counter()

    def on_batch_end(self, state: FitState) -> None:
        if self.done:
            return
        self.ends.append(time.perf_counter())
        if len(self.ends) == min(self.after, state.batches):  # the ETA until the first epoch has ended
            steps = [b - a for a, b in itertools.pairwise(self.ends)]
            self.clock.estimate = (sum(steps) / len(steps) if steps else self.ends[0] - state.epoch_start) * \
                state.batches

    def on_epoch_end(self, state: FitState) -> None:
        if self.done or not self.ends:
            return
        self.done = True
        first = FirstEpoch(setup=(self.fit_start or self.created) - self.created,
                           first_batch=self.ends[0] - state.epoch_start,
                           batch_seconds=[b - a for a, b in itertools.pairwise(self.ends)],
                           validation=state.epoch_start + state.row["seconds"] - self.ends[-1],
                           epoch=time.perf_counter() - state.epoch_start)
        est = estimate_run(first, self.elapsed(), self.clock.left, self.folds, self.passes)
        steps, late = first.batch_seconds, first.batch_seconds[len(first.batch_seconds) // 2:]
        _logger.info("estimate from the first epoch: %s, %d later batches (%.3f s each, %.3f s in the second half) "
                     "-> %s", {k: round(v, 3) for k, v in first.__dict__.items() if k != "batch_seconds"}, len(steps),
                     sum(steps) / max(1, len(steps)), sum(late) / max(1, len(late)), est)
        self.clock.estimate, self.clock.fold_extra = est.epoch, est.fold_extra
        spread = f" (±{round(100 * min(est.spread, 1) / 5) * 5} %)" if est.spread >= self.SHOW_SPREAD else ""
        sooner = ""
        if self.patience > 0:  # early stopping may end every fold after patience + 1 epochs
            least = fewest_epochs_left(state.epochs, self.patience, self.folds, done=state.epoch + 1)
            if least < self.clock.left:
                shortest = estimate_run(first, self.elapsed(), least, self.folds, self.passes).seconds
                sooner = f"; early stopping may end it sooner, at the earliest after about {clock(shortest)}"
        self.say(f"estimate: about {clock(est.seconds)}{spread} for the run ({self.folds} fold(s), "
                 f"{self.clock.left} epochs left at ~{clock(est.epoch)} each, ~{clock(est.fold_extra)} a fold beyond "
                 f"its epochs){sooner}")


class ProgressBar(Callback):
    """Rich bars for the fold's epochs (with the run's ETA) and the epoch's batches.

    The running loss and accuracy are read from the device every ``every`` batches, not every step.
    """

    def __init__(self, progress, clock_: RunClock, label: str, every: int = 10):
        self.progress, self.clock, self.label, self.every = progress, clock_, label, every
        self.epoch_task = self.batch_task = None

    def on_fit_start(self, state: FitState) -> None:
        self.epoch_task = self.progress.add_task(self.label, total=state.epochs, completed=state.start_epoch,
                                                 info=f"run ETA {clock(self.clock.eta())}")
        self.batch_task = self.progress.add_task("  batches", total=1, info="")

    def on_epoch_start(self, state: FitState) -> None:
        self.progress.reset(self.batch_task, total=None, info="")

    def on_batch_end(self, state: FitState) -> None:
        info = None
        if state.batch % self.every == 0 or state.batch == state.batches:
            loss, correct = state.loss_sum.item(), state.correct.item()
            rate = state.seen / max(1e-9, time.perf_counter() - state.epoch_start)
            info = f"loss {loss / state.seen:.4f} acc {correct / state.seen:.3f} {rate:.0f} img/s"
        self.progress.update(self.batch_task, total=state.batches, completed=state.batch,
                             **({"info": info} if info else {}))

    def on_epoch_end(self, state: FitState) -> None:
        self.clock.epoch_done(state.row["seconds"])
        r = state.row
        self.progress.update(self.epoch_task, advance=1, info=f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.3f}"
                             + (" *" if state.improved else "") + f"  run ETA {clock(self.clock.eta())}")

    def on_fit_end(self, state: FitState) -> None:
        self.clock.fold_done(state.epochs - 1 - state.epoch if state.stop else 0)
        self.progress.remove_task(self.batch_task)
        self.progress.remove_task(self.epoch_task)


class EpochLines(Callback):
    """One plain, flushed line per epoch and one per fold, for logs and notebook cells."""

    def __init__(self, clock_: RunClock, label: str):
        self.clock, self.label = clock_, label

    def on_fit_start(self, state: FitState) -> None:
        if state.start_epoch:
            say(f"{self.label}: resuming after epoch {state.start_epoch} of {state.epochs}")

    def on_epoch_end(self, state: FitState) -> None:
        self.clock.epoch_done(state.row["seconds"])
        r = state.row
        say(f"{self.label} epoch {state.epoch + 1}/{state.epochs}: train loss {r['train_loss']:.4f} acc "
            f"{r['train_acc']:.3f} | val loss {r['val_loss']:.4f} acc {r['val_acc']:.3f}"
            f"{' *' if state.improved else ''} | {r['images_per_s']:,.0f} img/s | {clock(self.clock.elapsed())} "
            f"elapsed, run ETA {clock(self.clock.eta())}")

    def on_fit_end(self, state: FitState) -> None:
        self.clock.fold_done(state.epochs - 1 - state.epoch if state.stop else 0)
        stopped = f", stopped early after epoch {state.epoch + 1}" if state.stop else ""
        say(f"{self.label} done: best val loss {state.best_loss:.4f}{stopped}")


class Display:
    """What the main process shows while a run trains (see the module notes); a context manager.

    Args:
        enabled: show anything at all (``--progress``, and the main process).
        run: the run's name, at the start of each plain line.
    """

    def __init__(self, enabled: bool, run: str):
        self.enabled, self.run = enabled, run
        self.rich = make_progress() if enabled and on_terminal() else None

    def __enter__(self) -> Display:
        if self.rich is not None:
            self.rich.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self.rich is not None:
            self.rich.__exit__(*exc)
        return False

    def say(self, line: str) -> None:
        if not self.enabled:
            return
        if self.rich is not None:
            self.rich.console.print(line, highlight=False, markup=False)
        else:
            say(line)

    def callbacks(self, fold: int, position: int, count: int, clock_: RunClock) -> list[Callback]:
        """The callbacks that show fold ``fold``, the ``position``-th of ``count`` this process trains."""
        if not self.enabled:
            return []
        label = f"run {self.run} fold {fold} ({position}/{count})"
        return [ProgressBar(self.rich, clock_, f"fold {fold} ({position}/{count})") if self.rich is not None
                else EpochLines(clock_, label)]
