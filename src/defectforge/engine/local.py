"""The local engine: items in this process, or in ``workers`` spawned processes."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from defectforge.engine.base import Engine, Task

_TASK: Task | None = None


def limit_threads() -> None:
    """One compute thread per worker process (the workers are the parallelism): OpenCV,
    and torch and numba (e.g. the coreset's second thread, :mod:`defectforge.bank._lazy`)
    when the task's setup imported them (a worker that never needs torch never pays for
    importing it)."""
    import sys

    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if "numba" in sys.modules:
        import defectforge.bank._numba  # noqa: F401  (its threading layer, not OpenMP, starts here)

        sys.modules["numba"].set_num_threads(1)


def _init_worker(task: Task) -> None:
    global _TASK
    task.setup()
    limit_threads()
    _TASK = task


def _run(item: Any) -> Any:
    assert _TASK is not None
    return _TASK(item)


class LocalEngine(Engine):
    """``workers`` <= 1: items one after another in this process (``task.setup()`` once).
    More: spawned worker processes (:func:`defectforge._pool.imap_ordered`: they die with
    this process, even on SIGKILL), each set up once; records come back in item order."""

    name = "local"

    def map(self, task: Task, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        items = list(items)
        n = self.workers or 1
        if n <= 1 or len(items) <= 1:
            if items:
                task.setup()
            for it in items:
                yield it, task(it)
            return
        from defectforge._pool import imap_ordered

        results = imap_ordered(_run, items, min(n, len(items)), initializer=_init_worker, initargs=(task,))
        yield from zip(items, results)
