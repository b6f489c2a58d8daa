"""Optional progress for long loops on stderr; a no-op when disabled.

On a terminal it is a rich progress bar. When stderr is not a terminal (a log file, CI,
a pipe) a bar would only appear at the end, so plain lines are printed instead:
``<description>: <done>/<total> (<seconds> s)`` at every tenth of the work, at least
every :data:`LINE_EVERY_S` seconds, and at the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

LINE_EVERY_S = 30.0


class _Task:
    def __init__(self, progress, task_id):
        self._p = progress
        self._id = task_id

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._id, n)

    def update(self, completed: int) -> None:
        if self._p is not None:
            self._p.update(self._id, completed=completed)


class _LineTask:
    """Progress as plain lines (non-terminal stderr)."""

    def __init__(self, description: str, total: int, stream=None):
        self.description, self.total, self.done = description, max(int(total), 0), 0
        self._stream = stream if stream is not None else sys.stderr
        self._t0 = self._last_t = time.monotonic()
        self._last_step = -1

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        step = self.done * 10 // self.total if self.total else 10
        if force or step > self._last_step or now - self._last_t >= LINE_EVERY_S:
            print(f"{self.description}: {self.done}/{self.total} ({now - self._t0:.0f} s)", file=self._stream,
                  flush=True)
            self._last_step, self._last_t = step, now

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._emit()

    def update(self, completed: int) -> None:
        self.done = int(completed)
        self._emit()


@contextlib.contextmanager
def progress_task(description: str, total: int, enabled: bool) -> Iterator[_Task]:
    """``with progress_task("features", n, enabled) as t: ... t.advance()``."""
    if not enabled:
        yield _Task(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        task = _LineTask(description, total)
        task._emit(force=True)
        yield task
        if task._last_step < 10 or task.done != task.total:
            task._emit(force=True)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as p:
        tid = p.add_task(description, total=total)
        yield _Task(p, tid)
