"""Progress for people and for logs: rich bars on a terminal, plain flushed lines everywhere else.

A notebook cell (``!pipeline train``), ``nohup``, ``| tee log`` or a file is not a terminal: a rich bar
writes nothing there until its last frame. There each long step prints one line when it starts, at every
quarter and when it ends, and training one line per epoch (timm and fastai print plain lines for the same
reason). ``enabled=False`` (``--no-progress``) prints neither.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def on_terminal() -> bool:
    """Whether standard output is a terminal (rich's judgement, which also honours FORCE_COLOR and TTY_COMPATIBLE)."""
    return Console().is_terminal


def say(line: str) -> None:
    """One plain line on standard output, flushed at once (a log file sees it as it happens)."""
    print(line, flush=True)


def clock(seconds: float | None) -> str:
    """``0:42``, ``12:03`` or ``1:02:03``; ``-`` when unknown."""
    if seconds is None or seconds != seconds:
        return "-"
    s = round(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def make_progress(transient: bool = False) -> Progress:
    """A rich Progress with count, elapsed and remaining time, and a free-text field ``info``."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    transient=transient)


def track(items: Iterable[T], *, total: int | None = None, description: str = "",
          enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing a bar on a terminal, or plain lines at each quarter elsewhere."""
    if not enabled:
        yield from items
        return
    if on_terminal():
        with make_progress(transient=True) as progress:
            task = progress.add_task(description, total=total, info="")
            for item in items:
                yield item
                progress.advance(task)
        return
    yield from _plain(items, total, description)


def _plain(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    t0, done, marks = time.perf_counter(), 0, {round(total * q / 4) for q in (1, 2, 3)} if total else set()
    say(f"{description}: {total if total is not None else '?'} to do")
    for item in items:
        yield item
        done += 1
        if done in marks:
            say(f"{description}: {done}/{total} ({100 * done // total}%), {clock(time.perf_counter() - t0)} elapsed")
    seconds = time.perf_counter() - t0
    rate = done / max(seconds, 1e-9)  # a few slow items (folds) read better as seconds each
    pace = f"{rate:,.0f}/s" if rate >= 1 or not done else f"{seconds / done:,.0f} s each"
    say(f"{description}: {done} done in {clock(seconds)} ({pace})")


class NoProgress:
    """Stands in for rich's Progress when progress bars are off."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    reset = remove_task = advance = update
