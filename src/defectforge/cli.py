"""The ``defectforge`` command line (typer + rich).

Each area registers its own commands from a small module (``defectforge.<area>.cli``
with a ``register(app)`` function), so this file stays a table of contents. Heavy
imports (torch, timm) happen inside commands, never at start-up.

Errors that are the user's input (:class:`~defectforge.errors.DefectforgeError`) are
printed as one line, ``error: <file>: <problem>``, with exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.core import TyperGroup

from defectforge import __version__
from defectforge._cliutil import print_error
from defectforge.errors import DefectforgeError


class _Group(TyperGroup):
    """Root command group: a :class:`DefectforgeError` from any sub-command becomes one line
    on stderr and exit code 2 (also under ``typer.testing.CliRunner``), never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DefectforgeError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Group,
    name="defectforge",
    help="Synthetic industrial defects with exact labels, filtering, and detectors that use them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# area -> module with register(app); order is the order in --help.
COMMAND_MODULES = (
    "defectforge.data.cli",
    "defectforge.synth2d.cli",
    "defectforge.synth2d.diffusion.cli",
    "defectforge.synth3d.cli",
    "defectforge.detect.cli",
    "defectforge.detect3d.cli",
    "defectforge.filter.cli",
    "defectforge.supervised.cli",
    "defectforge.experiments.cli",
    "defectforge.demo",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"defectforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and requested output (no progress)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print log messages and every warning."),
) -> None:
    """defectforge: generate, filter and use synthetic defects."""
    from defectforge import _verbosity

    _verbosity.set_level(_verbosity.QUIET if quiet else _verbosity.VERBOSE if verbose else _verbosity.NORMAL)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # area not installed
                continue
            raise
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="defectforge")
    except DefectforgeError as exc:  # raised outside a command (e.g. while parsing)
        print_error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: outputs written so far are complete and kept; run again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
