"""Progress bars (rich), off when asked or when nothing would show them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def make_progress(transient: bool = False) -> Progress:
    """A rich Progress with count, elapsed and remaining time, and a free-text field ``info``."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    transient=transient)


def track(items: Iterable[T], *, total: int | None = None, description: str = "",
          enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing a bar when ``enabled``."""
    if not enabled:
        yield from items
        return
    with make_progress(transient=True) as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)


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
