"""The engine interface: map a per-item task over items, model loaded once per worker."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from defectforge.errors import ConfigError

ENGINES = ("local", "ray")


class Task:
    """A per-item job. Subclasses are plain picklable objects (paths and small settings,
    no open files or loaded models); :meth:`setup` runs once in each worker before its
    first item (load the model there), :meth:`__call__` does one item and returns a small
    record. Workers write outputs themselves (atomically), so only records travel back."""

    def setup(self) -> None:
        """Load what every item needs (a model, a backbone); once per worker."""

    def __call__(self, item: Any) -> Any:
        raise NotImplementedError


class _Indexed(Task):
    """``task`` over ``(position, item)`` pairs (so results can be put back in order)."""

    def __init__(self, task: Task):
        self.task = task

    def setup(self) -> None:
        self.task.setup()

    def __call__(self, pair: tuple[int, Any]) -> Any:
        return self.task(pair[1])


class Engine:
    """Runs ``task`` over ``items``; :meth:`map` yields ``(item, record)`` pairs in
    completion order. Use as a context manager (or call :meth:`close`)."""

    name = "engine"

    def __init__(self, workers: int | None = None):
        if workers is not None and int(workers) < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = None if workers is None else int(workers)

    def map(self, task: Task, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        raise NotImplementedError

    def map_ordered(self, task: Task, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """:meth:`map`, but the pairs come back in item order (a finished item waits, in
        memory, for the ones before it): for callers whose result depends on the order,
        such as rows appended to a file for a coreset."""
        items = list(items)
        pending: dict[int, tuple[Any, Any]] = {}
        nxt = 0
        for (k, _), rec in self.map(_Indexed(task), list(enumerate(items))):
            pending[k] = (items[k], rec)
            while nxt in pending:
                yield pending.pop(nxt)
                nxt += 1

    def close(self) -> None:
        """Release workers (and a Ray instance this engine started)."""

    def describe(self) -> str:
        return f"{self.name} engine, {self.workers or 1} worker(s)"

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def get_engine(name: str = "local", workers: int | None = None, address: str | None = None) -> Engine:
    """``local`` (this process, or ``workers`` > 1 local processes) or ``ray`` (``address``:
    None starts a local Ray; ``auto`` or ``ray://host:port`` or ``host:port`` attaches)."""
    key = (name or "local").lower()
    if key == "local":
        if address:
            raise ConfigError("--ray-address needs --engine ray")
        from defectforge.engine.local import LocalEngine

        return LocalEngine(workers)
    if key == "ray":
        from defectforge.engine.ray_engine import RayEngine

        return RayEngine(workers, address)
    raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
