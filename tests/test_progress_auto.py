"""``progress="auto"`` (ExDD/PatchCore's default): bars in an interactive session only."""

from __future__ import annotations

import contextlib
import sys

import defectforge.progress as prog
from defectforge.detect.exdd import ExDD


def _spy(monkeypatch) -> list:
    calls: list = []

    @contextlib.contextmanager
    def fake(*a, **k):
        yield lambda stage, done, total: calls.append((stage, done, total))

    monkeypatch.setattr(prog, "rich_progress", fake)
    return calls


def test_auto_is_silent_in_scripts_and_draws_in_an_interactive_session(monkeypatch):
    calls = _spy(monkeypatch)
    monkeypatch.delattr(sys, "ps1", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not prog.interactive_session() or sys.flags.interactive
    if not sys.flags.interactive:
        with prog.progress_task("features", 3, "auto") as t:
            t.advance()
        assert calls == []
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
    assert prog.interactive_session()
    with prog.progress_task("features", 3, "auto") as t:
        t.advance()
    assert calls and calls[0][0] == "features" and calls[-1][1] == 1


def test_exdd_defaults_to_auto_and_keeps_it_out_of_the_model_file():
    assert ExDD().progress == "auto"
    assert "progress" in ExDD.runtime_params
