"""Optional rich progress bars (stderr) for long loops; a no-op when disabled."""

from __future__ import annotations

import contextlib
from typing import Iterator


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


@contextlib.contextmanager
def progress_task(description: str, total: int, enabled: bool) -> Iterator[_Task]:
    """``with progress_task("features", n, enabled) as t: ... t.advance()``."""
    from defectforge._verbosity import is_quiet

    if not enabled or is_quiet():
        yield _Task(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=False) as p:
        tid = p.add_task(description, total=total)
        yield _Task(p, tid)
