"""The Ray engine: one actor per worker (the task set up once in each), items streamed to
the actors with a short queue each, records back in completion order.

Faults: an actor whose process dies is restarted by Ray (``max_restarts``) and its
unfinished items are retried on it (``max_task_retries``); finished items are not redone.
Items write their own outputs atomically, so a retried item rewrites the same bytes.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

from defectforge.engine.base import Engine, Task
from defectforge.errors import ConfigError, DefectforgeError

#: restarts of one actor process and retries of one item before the run fails
MAX_RESTARTS = 8
MAX_TASK_RETRIES = 3
#: items queued per actor (one running, one waiting: no idle gap between items)
QUEUE_PER_WORKER = 2
_END = object()


class _Worker:
    """Body of the Ray actor: sets the task up once, then runs items."""

    def __init__(self, task: Task):
        from defectforge.engine.local import limit_threads

        self.error: BaseException | None = None
        self.task = task
        try:
            limit_threads()
            task.setup()
        except Exception as exc:  # reported by hello(), so the driver raises it as it is
            self.error = exc

    def hello(self) -> tuple[int, BaseException | None]:
        return os.getpid(), self.error

    def run(self, item: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.task(item)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'defectforge[dist]'") from None
    return ray


class RayEngine(Engine):
    """``RayEngine(workers=None, address=None)``. ``address`` None starts a local Ray
    (``workers`` CPUs, default all); ``auto``, ``host:port`` or ``ray://host:port``
    attaches to a running cluster. If Ray is already initialised in this process (a
    notebook, a test) that instance is used and left running. ``workers`` actors are
    created per :meth:`map` (default: the cluster's CPUs), one CPU each."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        super().__init__(workers)
        ray = _import_ray()
        self._ray = ray
        self.address = address
        self._started = False
        self.worker_pids: list[int] = []

    def _connect(self) -> None:
        """Start or attach to Ray on first use (so bad input fails before Ray starts)."""
        ray = self._ray
        address = self.address
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
            try:
                if address:
                    ray.init(address=address, **kw)
                else:
                    ray.init(num_cpus=self.workers or os.cpu_count() or 1, **kw)
            except ConnectionError as exc:
                raise ConfigError(f"--ray-address {address}: cannot reach a Ray cluster ({exc})") from None
            self._started = True

    def _n_workers(self) -> int:
        self._connect()
        if self.workers:
            return self.workers
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def describe(self) -> str:
        where = self.address or "local Ray"
        return f"ray engine ({where}), {self._n_workers()} worker(s)"

    def map(self, task: Task, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        ray = self._ray
        items = list(items)
        if not items:
            return
        self._connect()
        n = min(self._n_workers(), len(items))
        actor_cls = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)(_Worker)
        task_ref = ray.put(task)
        actors = [actor_cls.remote(task_ref) for _ in range(n)]
        try:
            hello = ray.get([a.hello.remote() for a in actors])
            for _, err in hello:
                if err is not None:
                    raise err
            self.worker_pids = [pid for pid, _ in hello]
            it = iter(items)
            inflight: dict[Any, tuple[Any, int]] = {}

            def submit(k: int) -> None:
                item = next(it, _END)
                if item is not _END:
                    inflight[actors[k].run.remote(item)] = (item, k)

            for _ in range(QUEUE_PER_WORKER):
                for k in range(n):
                    submit(k)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    item, k = inflight.pop(ref)
                    rec = self._get(ref, item)
                    submit(k)
                    yield item, rec
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
            self.worker_pids = []

    def _get(self, ref: Any, item: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, DefectforgeError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(f"item {item!r}: its Ray worker died more than {MAX_TASK_RETRIES} times "
                               f"({exc.__class__.__name__})") from exc

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
