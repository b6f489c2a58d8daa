"""One progress protocol for every long job.

A progress callback is any callable ``progress(stage, done, total)``:

- ``stage``: what is being done (``"features (normal)"``, ``"train"``, a condition name);
- ``done``: units finished so far in this stage (monotone within a stage);
- ``total``: units in the stage, or ``None`` when unknown.

Library functions take ``progress: Progress | None`` (estimators also accept ``True`` for
rich bars on stderr); front ends pass their own callback: the CLI uses
:func:`rich_progress`, the Ray engine and the studio forward the same three values.

A front end that runs the CLI as a child process (the studio's ``detect fit`` / ``detect eval``
jobs) sets ``DEFECTFORGE_PROGRESS_FILE``: every :func:`rich_progress` callback then also appends
JSON lines ``{"stage", "done", "total"}`` to that file (see :func:`file_progress`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Protocol, Union


class Progress(Protocol):
    """``progress(stage, done, total)``: see the module docstring."""

    def __call__(self, stage: str, done: int, total: Optional[int]) -> None: ...


ProgressLike = Union[bool, None, Callable[[str, int, Optional[int]], None]]


def notify(progress: Any, stage: str, done: int, total: int | None) -> None:
    """Call ``progress`` when it is a callback (``None``/``False``/``True`` are ignored here)."""
    if callable(progress):
        progress(stage, int(done), None if total is None else int(total))


class _Task:
    """One stage of :func:`progress_task`: ``advance(n)`` / ``update(done)``."""

    def __init__(self, stage: str, total: int | None, sink: Callable[[str, int, int | None], None] | None):
        self.stage, self.total, self.done = stage, total, 0
        self._sink = sink

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, completed: int) -> None:
        self.done = int(completed)
        if self._sink is not None:
            self._sink(self.stage, self.done, self.total)


def interactive_session() -> bool:
    """True in an interactive Python session (``python -i``/the REPL, IPython, Jupyter), where
    long library calls should show progress; False in scripts, tests and the CLI's workers."""
    import sys

    return bool(hasattr(sys, "ps1") or sys.flags.interactive or "ipykernel" in sys.modules)


@contextlib.contextmanager
def progress_task(stage: str, total: int | None, progress: ProgressLike) -> Iterator[_Task]:
    """``with progress_task("features", n, progress) as t: ... t.advance()``.

    ``progress``: a callback (called on every update), ``True`` (a rich bar on stderr),
    ``"auto"`` (a bar only in an interactive session: a Python prompt, IPython or Jupyter) or
    ``False``/``None`` (nothing)."""
    if isinstance(progress, str) and progress == "auto":
        progress = interactive_session()
    if callable(progress):
        yield _Task(stage, total, progress)
        return
    if not progress:
        yield _Task(stage, total, None)
        return
    with rich_progress() as cb:
        cb(stage, 0, total)  # the bar shows from the start
        yield _Task(stage, total, cb)


@contextlib.contextmanager
def rich_progress(console: Any = None, transient: bool = False) -> Iterator[Callable[[str, int, int | None], None]]:
    """A progress callback that draws one rich bar per stage (stderr by default); also
    JSON lines into ``$DEFECTFORGE_PROGRESS_FILE`` when that is set."""
    import os

    console = console or _stderr_console()
    if os.environ.get(PROGRESS_FILE_ENV):
        with file_progress(os.environ[PROGRESS_FILE_ENV]) as to_file:
            with _plain_or_bars(console, transient) as shown:
                yield _tee(to_file, shown)
        return
    with _plain_or_bars(console, transient) as cb:
        yield cb


PROGRESS_FILE_ENV = "DEFECTFORGE_PROGRESS_FILE"


def _tee(*callbacks: Callable[[str, int, int | None], None]) -> Callable[[str, int, int | None], None]:
    def callback(stage: str, done: int, total: int | None) -> None:
        for cb in callbacks:
            cb(stage, done, total)

    return callback


@contextlib.contextmanager
def file_progress(path: str, every_s: float = 0.25) -> Iterator[Callable[[str, int, int | None], None]]:
    """A callback appending ``{"stage", "done", "total"}`` JSON lines to ``path`` (flushed; at
    most one line per ``every_s`` seconds and stage, plus each stage's first and last update)."""
    import json
    import time

    last: dict[str, float] = {}
    with open(path, "a", encoding="utf-8") as fh:

        def callback(stage: str, done: int, total: int | None) -> None:
            now = time.monotonic()
            end = total is not None and done >= total
            if stage in last and not end and now - last[stage] < every_s:
                return
            last[stage] = now
            fh.write(json.dumps({"stage": stage, "done": int(done), "total": total}) + "\n")
            fh.flush()

        yield callback


@contextlib.contextmanager
def _plain_or_bars(console: Any, transient: bool) -> Iterator[Callable[[str, int, int | None], None]]:
    """Rich bars on a terminal, plain lines otherwise."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    if not console.is_terminal and not console.quiet:  # a log file or pipe: a bar would show only at the end
        yield _line_callback(console)
        return
    tasks: dict[str, Any] = {}
    with RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _rate_column(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                      transient=transient) as bar:

        def callback(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:  # units already done at the first call (resumed) do not count in the rate
                tasks[stage] = bar.add_task(stage, total=total, completed=done, first=done)
            bar.update(tasks[stage], completed=done, total=total)

        yield callback


LINE_EVERY_S = 30.0


def _line_callback(console: Any) -> Callable[[str, int, int | None], None]:
    """Progress as plain lines ``<stage>: <done>/<total> (<seconds> s)`` for non-terminal
    output: at the start, at every tenth of a stage, at least every :data:`LINE_EVERY_S`
    seconds, and at its end."""
    import time

    state: dict[str, list[float]] = {}

    def callback(stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        t0, last_t, last_step = state.setdefault(stage, [now, -1e9, -1.0])
        step = float(done * 10 // total) if total else float(done)
        if step > last_step or now - last_t >= LINE_EVERY_S or (total and done >= total and last_step < 10):
            console.print(f"{stage}: {done}/{total if total is not None else '?'} ({now - t0:.0f} s)",
                          highlight=False, markup=False)
            state[stage] = [t0, now, step]

    return callback


def _rate_column():
    """Units per second of this run (since the stage's first update)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            n, dt = task.completed - task.fields.get("first", 0), task.elapsed or 0.0
            return Text(f"{n / dt:.1f}/s" if n > 0 and dt > 0 else "-/s", style="progress.data.speed")

    return _Rate()


def _stderr_console():
    """The bars' console: stderr, silent under ``defectforge -q``."""
    from rich.console import Console

    from defectforge._verbosity import is_quiet

    return Console(stderr=True, quiet=is_quiet())
