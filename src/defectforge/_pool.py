"""A process pool that yields results in input order and whose workers never outlive the
process that started them.

``ProcessPoolExecutor`` workers notice a parent that exits normally, but not one killed
with SIGKILL: they keep running (and holding memory) for minutes. Here every worker (1)
asks the Linux kernel to kill it when its parent dies (``PR_SET_PDEATHSIG`` through
ctypes) and (2) runs a watchdog thread that exits the worker as soon as its parent pid
changes (re-parenting), which also covers systems without ``prctl``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Sequence

POLL_S = 0.5


def kill_me_with_parent() -> None:
    """Ask the Linux kernel to SIGKILL the calling process when its parent dies (no-op
    elsewhere); usable as ``subprocess.Popen(preexec_fn=...)``: the request survives ``exec``."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass


def die_with_parent(parent_pid: int) -> None:
    """Make the calling (worker) process exit when ``parent_pid`` is no longer its parent."""
    kill_me_with_parent()
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def imap_ordered(work: Callable[[Any], Any], items: Iterable[Any], workers: int,
                 initializer: Callable[..., None] | None = None, initargs: Sequence[Any] = (),
                 window: int = 4) -> Iterator[Any]:
    """``work(item)`` for every item, in order, on ``workers`` spawned processes (at most
    ``window * workers`` items in flight). ``work`` and ``initializer`` must be importable
    top-level functions."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")  # no fork-after-threads hazards; same results on every OS
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                             initargs=(os.getpid(), initializer, tuple(initargs)))
    try:
        q: deque = deque()
        it = iter(items)
        for i in it:
            q.append(ex.submit(work, i))
            if len(q) >= window * workers:
                break
        while q:
            res = q.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                q.append(ex.submit(work, nxt))
            yield res
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
