"""The README's tour is what `bench/bench_tour.py` times, and every command in it names
commands and options the CLI has (parsed by click, never run)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]


def _bench_tour():
    spec = importlib.util.spec_from_file_location("bench_tour", ROOT / "bench" / "bench_tour.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _click_modules(cmd) -> tuple:
    """``(core, exceptions)`` of the click the CLI is built on (typer may carry its own copy)."""
    base = next(c for c in type(cmd).__mro__ if c.__name__ == "Command")
    pkg = base.__module__.rsplit(".", 1)[0]
    return importlib.import_module(pkg + ".core"), importlib.import_module(pkg + ".exceptions")


def _usage_error(words: list[str]) -> str | None:
    """Click's usage error for ``defectforge WORDS...`` (unknown command or option, extra
    argument), or None. A value click rejects (a path that does not exist here, a missing
    argument) is not a usage error of the README's."""
    from defectforge import cli

    cmd = typer.main.get_command(cli.app)
    core, exc = _click_modules(cmd)
    ctx = core.Context(cmd, info_name="defectforge")
    args = list(words)
    try:
        while hasattr(cmd, "resolve_command"):  # a group
            name, cmd, args = cmd.resolve_command(ctx, args)
            if not hasattr(cmd, "resolve_command"):
                with cmd.make_context(name, list(args), parent=ctx):
                    return None
            ctx = core.Context(cmd, info_name=name, parent=ctx)
    except exc.BadParameter:
        return None
    except exc.UsageError as e:
        return e.format_message()
    return None


def test_tour_is_read_from_the_readme():
    cmds = _bench_tour().tour_commands(ROOT / "README.md")
    assert len(cmds) >= 20
    joined = "\n".join(cmds)
    for needle in ("defectforge detect fit", "defectforge synth ", "defectforge filter quality", "defectforge synth3d"):
        assert needle in joined
    # continuation lines are joined into their command, comments dropped
    assert any("--to mvtec,yolo,coco" in c and c.startswith("defectforge synth ") for c in cmds)
    assert not any("#" in c for c in cmds)


def test_placeholders_are_replaced_or_skipped(tmp_path):
    bt = _bench_tour()
    argv, note = bt.prepare("defectforge detect predict out/m.pt 'some/*.jpg' --out o", tmp_path, ["a.png", "b.png"])
    assert argv[-4:] == ["a.png", "b.png", "--out", "o"] and "2 BSData TEST images" in note
    argv, _ = bt.prepare("defectforge data check ../shared/datasets/bsdata", tmp_path, [])
    assert argv == ["defectforge", "data", "check", str(tmp_path)]
    assert bt.prepare("defectforge diffusion check /models/sdxl", tmp_path, [])[0] is None
    assert bt.prepare(". .venv/bin/activate", tmp_path, [])[0] is None


def test_the_parser_catches_a_wrong_option_and_command():
    assert "--bogus" in _usage_error(["detect", "fit", "DATA", "--bogus", "1"])
    assert _usage_error(["detect", "fitt", "DATA"]) is not None
    assert _usage_error(["detect", "fit", "DATA", "--model", "exdd", "-o", "m.pt"]) is None


@pytest.mark.parametrize("cmd", [c for c in _bench_tour().tour_commands(ROOT / "README.md")
                                 if c.startswith("defectforge ")])
def test_every_tour_command_parses(cmd):
    assert _usage_error(shlex.split(cmd)[1:]) is None, cmd
