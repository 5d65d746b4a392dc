"""Progress on stderr for work that takes a while: a bar when the total is known (bytes of a
list, files of a batch), a spinner when it is not (decompressing a kernel, a build).

Shown only when stderr is a terminal, and only once the work has run for ``DELAY`` seconds
(``KIMAGEKIT_PROGRESS_DELAY`` overrides), so a quick command, a pipe or a log file never sees
it. rich is imported at that moment, not before: the CLI's start-up does not pay for it. The
bar is transient (erased when the work ends), so what the command prints stays as it was.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["DELAY", "Progress", "enabled", "ticking"]

DELAY = 1.0  # seconds of work before anything is shown
_T = TypeVar("_T")


def _delay() -> float:
    try:
        return float(os.environ.get("KIMAGEKIT_PROGRESS_DELAY", DELAY))
    except ValueError:
        return DELAY


def enabled() -> bool:
    """Is stderr a terminal (the only place progress goes)?"""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class Progress:
    """``with Progress("checking LIST", total=size) as p: ... p.update(done)``: a bar (or, with
    ``total`` None, a spinner) on stderr after ``DELAY`` seconds, if stderr is a terminal.
    ``update`` is cheap when nothing is shown (one comparison), so it may be called per entry."""

    def __init__(self, description: str, total: int | None = None) -> None:
        self.description = description
        self.total = total
        self.completed = 0
        self._on = enabled()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._bar: Any = None  # rich.progress.Progress once shown
        self._task: Any = None
        self._next = 0.0  # monotonic time of the next redraw

    def __enter__(self) -> Progress:
        if self._on and _delay() <= 0:
            self._show()  # at once: drawn before the work starts, however short it is
        elif self._on:
            # a timer, so that a spinner appears even while one long call (a decompression)
            # holds the main thread
            self._timer = threading.Timer(_delay(), self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    @property
    def callback(self) -> Callable[[int], None] | None:
        """``update``, or None when nothing can be shown (not a terminal): a library that
        takes an optional progress callback then skips the per-entry call altogether."""
        return self.update if self._on else None

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if self.total is not None:
            columns += [BarColumn(), TextColumn("{task.percentage:>3.0f}%")]
        columns.append(TimeElapsedColumn())
        with self._lock:
            if not self._on:
                return
            # stdout stays where it goes: rich would otherwise route it through the bar's console
            bar = Bar(*columns, console=Console(file=sys.stderr), transient=True,
                      redirect_stdout=False, redirect_stderr=False)
            self._task = bar.add_task(self.description, total=self.total,
                                      completed=int(self.completed))
            bar.start()
            self._bar = bar

    def update(self, completed: int) -> None:
        self.completed = completed
        if self._bar is None:
            return
        now = time.monotonic()
        if now >= self._next:  # rich redraws on its own; hand it a value 10 times a second
            self._next = now + 0.1
            self._bar.update(self._task, completed=completed)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._on = False
            if self._timer is not None:
                self._timer.cancel()
            if self._bar is not None:
                self._bar.stop()
                self._bar = None


def ticking(items: Iterable[_T], progress: Progress, position: Any) -> Iterator[_T]:
    """``items`` passed through, ``progress`` updated with ``position(item)`` for each."""
    if not progress._on:
        yield from items
        return
    for item in items:
        progress.update(position(item))
        yield item
