"""The Ray engine: one actor per worker (the task set up once in each), items streamed to
the actors with a short queue each, records back in completion order.

Faults: an actor whose process dies is restarted by Ray (``max_restarts``) and its
unfinished items are retried on it (``max_task_retries``); finished items are not redone.
Items write their own outputs atomically, so a retried item rewrites the same bytes.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Iterable, Iterator

from defectforge.engine.base import Engine, Task
from defectforge.errors import ConfigError, DefectforgeError

#: restarts of one actor process and retries of one item before the run fails
MAX_RESTARTS = 8
MAX_TASK_RETRIES = 3
#: items queued per actor (one running, one waiting: no idle gap between items)
QUEUE_PER_WORKER = 2
#: seconds to wait for the worker actors to start (all CPUs busy: fail with a clear message)
START_TIMEOUT_S = 300
_END = object()
#: the worker actors of this process (per Ray session) and how many open engines use them
_POOL: dict[str, Any] = {"session": None, "actors": [], "users": 0}


class _Worker:
    """Body of a Ray actor. Each call carries the job's task (an object-store reference, in
    a list so Ray passes it unresolved); the actor fetches and sets up a task once, on its
    first item of that job, and again after Ray restarts a killed actor process."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.task: Task | None = None
        self.error: BaseException | None = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, key: str, boxed_task: list, item: Any) -> Any:
        if key != self.key:
            import ray

            self.key, self.task, self.error = key, None, None
            try:
                from defectforge.engine.local import limit_threads

                task = ray.get(boxed_task[0])
                task.setup()
                limit_threads()
                self.task = task
            except Exception as exc:  # raised for every item of this job on this actor
                self.error = exc
        if self.error is not None:
            raise self.error
        return self.task(item)  # type: ignore[misc]


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
    notebook, a test) that instance is used and left running. ``workers`` actors (default:
    one per cluster CPU, one CPU each) come from a pool that lives while any engine of
    this process is open, so later jobs skip the workers' start-up."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        super().__init__(workers)
        ray = _import_ray()
        self._ray = ray
        self.address = address
        self._started = False
        self.worker_pids: list[int] = []
        self._in_pool = False

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
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"--ray-address {address}" if address else "a local Ray"
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
                raise ConfigError(f"{where}: cannot start or reach a Ray cluster ({first})") from None
            self._started = True

    def _n_workers(self) -> int:
        self._connect()
        if self.workers:
            return self.workers
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def describe(self) -> str:
        where = self.address or "local Ray"
        return f"ray engine ({where}), {self._n_workers()} worker(s)"

    def _pool(self, n: int) -> list:
        """``n`` actors of the process-wide pool (created on first use, shared by every open
        engine of this process, so two engines never wait on each other's CPUs)."""
        ray = self._ray
        session = ray.get_runtime_context().get_job_id()
        if _POOL["session"] != session:  # Ray was restarted: the old actors are gone
            _POOL.update(session=session, actors=[], users=0)
        if not self._in_pool:
            self._in_pool = True
            _POOL["users"] += 1
        actors = _POOL["actors"]
        if len(actors) < n:
            cls = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)(_Worker)
            actors += [cls.remote() for _ in range(n - len(actors))]
        mine = actors[:n]
        try:
            self.worker_pids = ray.get([a.pid.remote() for a in mine], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(f"Ray could not start {n} worker(s) of 1 CPU each in {START_TIMEOUT_S} s (cluster CPUs: "
                              f"{ray.cluster_resources().get('CPU', 0):g}, free: "
                              f"{ray.available_resources().get('CPU', 0):g}); lower --workers") from None
        return mine

    def map(self, task: Task, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        ray = self._ray
        items = list(items)
        if not items:
            return
        self._connect()
        actors = self._pool(min(self._n_workers(), len(items)))
        boxed = [ray.put(task)]
        key = uuid.uuid4().hex
        it = iter(items)
        inflight: dict[Any, tuple[Any, int]] = {}

        def submit(k: int) -> None:
            item = next(it, _END)
            if item is not _END:
                inflight[actors[k].run.remote(key, boxed, item)] = (item, k)

        try:
            for _ in range(QUEUE_PER_WORKER):
                for k in range(len(actors)):
                    submit(k)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    item, k = inflight.pop(ref)
                    rec = self._get(ref, item)
                    submit(k)
                    yield item, rec
        finally:
            if inflight:  # a failed or abandoned job: stop its queued items, collect finished ones quietly
                refs = list(inflight)
                for ref in refs:
                    try:
                        ray.cancel(ref)
                    except Exception:  # already finished or its actor is gone
                        pass
                finished, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in finished:
                    try:
                        ray.get(ref)
                    except Exception:  # their errors are not this job's to report
                        pass

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
        """Leave the pool (its actors end with the last engine) and stop a Ray this engine started."""
        if self._in_pool:
            self._in_pool = False
            _POOL["users"] -= 1
            if _POOL["users"] <= 0:
                if self._ray.is_initialized():
                    for a in _POOL["actors"]:
                        self._ray.kill(a, no_restart=True)
                _POOL.update(actors=[], users=0)
        self.worker_pids = []
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
