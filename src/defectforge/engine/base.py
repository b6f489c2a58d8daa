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
