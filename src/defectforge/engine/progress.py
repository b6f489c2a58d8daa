"""One progress bar for a whole job on the driver: done / total, items/s, elapsed, eta.

Items resumed from a journal count as done but not towards the rate, so items/s is the
speed of this run's workers (whichever engine runs them).
"""

from __future__ import annotations

import time
from typing import Any


class JobProgress:
    """``bar = JobProgress("synth"); bar.update(done, total)`` ... ``bar.close()``; the bar
    starts on the first update (so nothing is drawn before the inputs are checked)."""

    def __init__(self, description: str, enabled: bool = True, console: Any = None):
        self.description = description
        self.enabled = enabled
        self._console = console
        self._p = None
        self._task = None
        self._first: int | None = None
        self._t0 = 0.0

    def rate(self, done: int) -> float:
        """Items per second since the first update."""
        if self._first is None:
            return 0.0
        dt = time.perf_counter() - self._t0
        return (done - self._first) / dt if dt > 0 else 0.0

    def update(self, done: int, total: int, item: str = "") -> None:
        if self._first is None:
            self._first, self._t0 = done, time.perf_counter()
        if not self.enabled:
            return
        if self._p is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[rate]:.1f} items/s"), TimeElapsedColumn(), TextColumn("eta"),
                               TimeRemainingColumn(), TextColumn("{task.fields[item]}"),
                               console=self._console or Console(stderr=True), transient=False)
            self._p.start()
            self._task = self._p.add_task(self.description, total=total, rate=0.0, item="")
        self._p.update(self._task, completed=done, total=total, rate=self.rate(done), item=item)

    def __call__(self, done: int, total: int, item: str = "") -> None:
        self.update(done, total, item)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None

    def __enter__(self) -> "JobProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
