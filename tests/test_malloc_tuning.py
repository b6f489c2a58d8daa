"""glibc allocator thresholds raised once per process where a network runs, unless opted out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = ("import defectforge._malloc as m; a = m.tune_malloc(); b = m.tune_malloc(); "
        "print(a, b, m._state['done'])")


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DEFECTFORGE_MALLOC"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_once_on_glibc_and_never_when_opted_out():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _run({}) == ["True", "True", "True"]
    assert _run({"DEFECTFORGE_MALLOC": "default"}) == ["False", "False", "False"]


def test_building_an_extractor_tunes_the_allocator(monkeypatch):
    import defectforge._malloc as m
    from defectforge.bank.backbone import build_extractor

    calls = []
    monkeypatch.setattr(m, "tune_malloc", lambda: calls.append(1) or True)
    build_extractor("efficientnet_lite0")
    assert calls == [1]
