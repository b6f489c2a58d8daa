"""The local engine: items in this process, or in ``workers`` spawned processes."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from defectforge.engine.base import Engine, Task

_TASK: Task | None = None
_END = object()


def limit_threads() -> None:
    """One compute thread per worker process: the workers are the parallelism."""
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


def _init_worker(task: Task) -> None:
    global _TASK
    limit_threads()
    task.setup()
    _TASK = task


def _run(item: Any) -> Any:
    assert _TASK is not None
    return _TASK(item)


class LocalEngine(Engine):
    """``workers`` <= 1: items one after another in this process (``task.setup()`` once).
    More: a spawn-context process pool (the same on every OS), each worker set up once,
    at most ``4 * workers`` items in flight."""

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
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ex = ProcessPoolExecutor(max_workers=min(n, len(items)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(task,))
        try:
            pending: dict = {}
            it = iter(items)
            for item in it:
                pending[ex.submit(_run, item)] = item
                if len(pending) >= 4 * n:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    nxt = next(it, _END)
                    if nxt is not _END:
                        pending[ex.submit(_run, nxt)] = nxt
                    yield item, fut.result()
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
