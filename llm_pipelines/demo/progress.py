"""Progress of long CLI work: rich progress bars (counts, rate, ETA) on a terminal, and a
plain line per step everywhere else, so logs of tests and CI stay clean.

rich rather than tqdm: Dagster already depends on it, and one live display holds several
bars (landing, the cycle, batch collection) next to the messages printed between them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Item = TypeVar("Item")


class Step:
    """One step of work: advance it as items finish; its total may grow (new batches)."""

    def __init__(self, progress: Progress | None, task: TaskID | None, total: int | None) -> None:
        self._progress = progress
        self._task = task
        self.total = total
        self.completed = 0

    def advance(self, amount: int = 1) -> None:
        """``amount`` more items done."""
        self.completed += amount
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.completed)

    def update(self, *, total: int | None = None, description: str | None = None) -> None:
        """Change the total (work discovered on the way) or the description."""
        if total is not None:
            self.total = total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=self.total, description=description)


class Reporter:
    """Messages and progress steps, written to stderr (stdout stays for results)."""

    def __init__(self, console: Console | None = None, *, live: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live

    def say(self, message: str) -> None:
        """One line of news."""
        self.console.print(f"· {message}", markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Step]:
        """A bar (with ETA once ``total`` is known) while live; one summary line otherwise."""
        started = time.monotonic()
        if not self.live:
            step = Step(None, None, total)
            yield step
            counted = f"{step.completed:,}" + (f"/{step.total:,}" if step.total else "")
            done = f"{counted} in " if step.completed or step.total else "done in "
            self.say(f"{description}: {done}{time.monotonic() - started:.1f}s")
            return
        counted = (BarColumn(), MofNCompleteColumn(), TextColumn("eta"), TimeRemainingColumn())
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            # Work of unknown size gets a spinner and the time so far, not an empty bar.
            *(counted if total is not None else ()),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(description, total=total)
            yield Step(progress, task, total)

    def track(self, items: Iterable[Item], description: str, total: int | None) -> Iterator[Item]:
        """Yield ``items``, counting them in a step."""
        with self.step(description, total) as step:
            for item in items:
                yield item
                step.advance()


class QuietReporter(Reporter):
    """Reports nothing (library use, tests that only want the result)."""

    def __init__(self) -> None:
        super().__init__(Console(quiet=True), live=False)
