"""The engine interface without Ray: the local engine in this process and in worker
processes (each set up once), option errors, and Ray's absence as one line."""

from __future__ import annotations

import os

import pytest

from defectforge.engine import LocalEngine, Task, get_engine
from defectforge.errors import ConfigError, InputError


class Square(Task):
    """Records which process ran an item and how often that process was set up."""

    def __init__(self) -> None:
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def __call__(self, item: int) -> tuple[int, int, int]:
        if item < 0:
            raise InputError(f"item{item}.png", "negative")
        return os.getpid(), self.setups, item * item


@pytest.mark.parametrize("workers", [1, 2])
def test_local_engine_runs_every_item_once_with_one_setup_per_worker(workers):
    items = list(range(9))
    with LocalEngine(workers) as eng:
        got = list(eng.map(Square(), items))
    assert sorted(i for i, _ in got) == items
    assert all(r[2] == i * i for i, r in got)
    assert all(r[1] == 1 for _, r in got)  # set up once per process, before its first item
    pids = {r[0] for _, r in got}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids and 1 <= len(pids) <= 2)


def test_worker_errors_cross_the_process_boundary_intact():
    with pytest.raises(InputError) as exc:
        list(LocalEngine(2).map(Square(), [1, 2, -3, 4]))
    assert exc.value.problem == "negative" and str(exc.value) == "item-3.png: negative"


def test_engine_options_are_checked():
    with pytest.raises(ConfigError, match="--engine must be one of local, ray"):
        get_engine("spark")
    with pytest.raises(ConfigError, match="--ray-address needs --engine ray"):
        get_engine("local", address="auto")
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        get_engine("local", workers=0)
    assert list(LocalEngine(2).map(Square(), [])) == []


def test_ray_engine_without_ray_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [dist] extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'defectforge\[dist\]'"):
        get_engine("ray")
