"""Scoring's two stages side by side (detect._overlap): same items in order, errors at their
item, an early stop ends the worker, thread counts restored."""

import threading
import time

import pytest
import torch

from defectforge.detect._overlap import _halve_threads, overlapped


def test_items_in_order_and_computed_ahead():
    started = []

    def source():
        for i in range(6):
            started.append(i)
            yield i * i

    it = overlapped(source(), 6)
    assert next(it) == 0
    deadline = time.time() + 5
    while len(started) < 2 and time.time() < deadline:  # the next item is made while the caller works
        time.sleep(0.01)
    assert len(started) >= 2
    assert list(it) == [1, 4, 9, 16, 25]


def test_empty_source():
    assert list(overlapped(iter(()), 0)) == []
    assert list(overlapped(iter(()), 3)) == []
    assert list(overlapped(iter([7]), 1)) == [7]


def test_an_error_is_raised_at_its_item():
    def source():
        yield 1
        yield 2
        raise ValueError("bad image x.png")

    got = []
    with pytest.raises(ValueError, match="x.png"):
        for v in overlapped(source(), 3):
            got.append(v)
    assert got == [1, 2]


def test_stopping_early_ends_the_worker():
    made = []

    def source():
        for i in range(10_000):
            made.append(i)
            yield i

    before = threading.active_count()
    for v in overlapped(source(), 10_000):
        if v == 3:
            break
    time.sleep(0.05)
    assert threading.active_count() == before  # joined
    assert len(made) <= 6  # at most a couple ahead, not the whole source


def test_halving_halves_and_restores():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        restore = _halve_threads()
        assert torch.get_num_threads() == 1
        restore()
        assert torch.get_num_threads() == 2
        restore()  # a second restore is a no-op
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):
            for _ in overlapped(iter(range(4)), 4):  # the caller fails mid-way: threads restored
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)

def test_threads_halved_while_both_run_and_whole_for_first_and_last():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    seen_worker, seen_caller = [], []

    def source():
        for i in range(4):
            seen_worker.append((i, torch.get_num_threads()))
            yield i

    try:
        for i in overlapped(source(), 4):
            seen_caller.append((i, torch.get_num_threads()))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    assert seen_worker[0] == (0, 2)  # the first item, before any overlap
    assert all(n == 1 for _, n in seen_worker[1:])
    assert [n for _, n in seen_caller] == [1, 1, 1, 2]  # the last item: all threads back


def test_concurrent_overlapped_calls_restore_the_count_they_found():
    """Overlapped calls at once in several threads (e.g. a server's): a later one does not
    halve again, and the count is restored only when all are done."""
    old = torch.get_num_threads()
    torch.set_num_threads(4)
    gate = threading.Event()
    seen = []

    def slow(n):
        for i in range(n):
            gate.wait(5)
            yield i

    def run():
        seen.append(list(overlapped(slow(3), 3)))

    try:
        outer = _halve_threads()
        assert torch.get_num_threads() == 2
        t = threading.Thread(target=run)
        t.start()
        inner = _halve_threads()
        assert torch.get_num_threads() == 2  # not halved twice
        inner()
        assert torch.get_num_threads() == 2  # the others still run
        gate.set()
        t.join(10)
        assert seen == [[0, 1, 2]]
        assert torch.get_num_threads() == 2  # outer still runs
        outer()
        outer()  # a second restore is a no-op
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(old)
