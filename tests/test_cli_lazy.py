"""The console script imports only the area of the command it runs (``defectforge.cli.main``);
``defectforge.cli.app`` is always the whole command tree."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import typer

from defectforge import cli


def _names(app: typer.Typer) -> list[str]:
    from typer.main import get_command_name

    return ([c.name or get_command_name(c.callback.__name__) for c in app.registered_commands]
            + [g.name or g.typer_instance.info.name for g in app.registered_groups])


def test_the_owner_table_names_every_command_of_every_area_and_nothing_else():
    owners = {}
    for module in cli.COMMAND_MODULES:
        app = typer.Typer()
        importlib.import_module(module).register(app)
        for name in _names(app):
            owners[name] = module
    assert owners == cli.COMMAND_OWNERS


_PROBE = """
import json, sys
from defectforge import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
areas = [m for m in cli.COMMAND_MODULES if m in sys.modules]
print(json.dumps({"areas": areas, "torch": "torch" in sys.modules}))
"""


def _probe(*argv: str) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_command_imports_only_its_own_area():
    assert _probe("-q", "detect", "fit", "--help") == {"areas": ["defectforge.detect.cli"], "torch": False}
    assert _probe("--version") == {"areas": [], "torch": False}
    everything = _probe("--help")["areas"]
    assert everything == list(cli.COMMAND_MODULES)
    assert _probe("detct")["areas"] == everything  # a typo: every command, for click's suggestion


def test_after_a_lazy_run_app_is_the_whole_tree_in_table_order(monkeypatch, capsys):
    full = _names(cli.app)
    monkeypatch.setattr(cli, "_registered", [])
    cli._app.registered_commands.clear()
    cli._app.registered_groups.clear()
    try:
        cli.main(["detect", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "fit" in capsys.readouterr().out
    assert _names(cli._app) == ["detect"]
    assert _names(cli.app) == full  # every area again, in COMMAND_MODULES order
    assert [n for n in full if n in ("data", "detect", "filter")] == ["data", "detect", "filter"]
