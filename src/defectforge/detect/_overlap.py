"""Two stages of scoring at once on a multi-core CPU.

Scoring a batch has two halves of similar cost at the README defaults: reading the images and
running the backbone (PyTorch), then the nearest-neighbour search, maps and scores (numba,
NumPy, OpenCV). Each half scales poorly from one core to two (the backbone 1.67x, the search
1.4x on the 2-core machine: activation maps and the screening product are memory-bound), so
running them side by side, the backbone of batch ``i + 1`` while batch ``i`` is searched,
each with half the cores, does more per second than running both halves one after the other
on all of them (measured in ``docs/bench/scale.md``).

:func:`overlapped` yields a source's items while a worker thread computes the next one, and
gives PyTorch and numba half the threads while both run (PyTorch's thread count is
process-wide, so it is restored afterwards; numba's is per thread): the first item (nothing to
overlap yet) and the caller's work on the last one get all the threads. Errors of the source
(e.g. an unreadable image) are raised in the caller at the item where they happened; a caller
that stops early stops the worker.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


_LOCK = threading.Lock()
_HALVED = {"users": 0, "old": 0}  # overlapped calls running now (any thread) and the count to restore


def _halve_threads() -> Callable[[], None]:
    """PyTorch and (in the calling thread) numba at half their threads, at least one; returns
    the function that restores both (safe to call more than once). PyTorch's count is
    process-wide: overlapped calls running at the same time in several threads share one
    halving, and the last to finish restores the count they found."""
    import numba
    import torch

    with _LOCK:
        if _HALVED["users"] == 0:
            _HALVED["old"] = torch.get_num_threads()
            torch.set_num_threads(max(1, _HALVED["old"] // 2))
        _HALVED["users"] += 1
        half = max(1, _HALVED["old"] // 2)
    nb_old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(half, nb_old)))
    done = []

    def restore() -> None:
        if done:
            return
        done.append(True)
        with _LOCK:
            _HALVED["users"] -= 1
            if _HALVED["users"] == 0:
                torch.set_num_threads(_HALVED["old"])
        numba.set_num_threads(nb_old)

    return restore


def overlapped(source: Iterable[T], total: int, ahead: int = 1) -> Iterator[T]:
    """The items of ``source`` (``total`` of them) in order. The first is made in the caller's
    thread with all the threads; then, while the caller works on item ``i``, a worker thread
    makes item ``i + 1``, both with half the threads (:func:`_halve_threads`); the caller gets
    all the threads back for the last item. With ``total <= 1``: no worker, no change."""
    it = iter(source)
    if total <= 1:
        yield from it
        return
    first = next(it, _DONE)
    if first is _DONE:
        return
    q: queue.Queue = queue.Queue(maxsize=max(1, int(ahead)))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in it:
                if not put((True, item)):
                    return
        except BaseException as exc:  # raised again in the caller, at this item
            put((False, exc))
            return
        put((True, _DONE))

    restore = _halve_threads()
    t = threading.Thread(target=work, name="defectforge-overlap", daemon=True)
    t.start()
    try:
        yield first
        k = 1
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            if k >= total - 1:  # the worker has made the last item: all the threads to the caller
                restore()
            k += 1
            yield item
    finally:
        stop.set()
        t.join()
        restore()
