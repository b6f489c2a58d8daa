"""The ``defectforge`` command line (typer + rich).

Each area registers its own commands from a small module (``defectforge.<area>.cli``
with a ``register(app)`` function), so this file stays a table of contents. Heavy
imports (torch, timm) happen inside commands, never at start-up.

**The one error boundary** is the root group (:class:`_Group`): a user error
(:class:`~defectforge.errors.DefectforgeError`) from any command becomes one line,
``error: <file>: <problem>``, with exit code 2; Ctrl-C becomes one line saying what was
kept and the command that resumes (:mod:`defectforge._cligrammar`), with exit code 130. Commands and library code only raise.

**Commands are registered one way**: each area module defines its commands as importable
module-level functions (or a ``typer.Typer`` group of them) and ``register(app)`` adds
them; this file lists the modules.
"""

from __future__ import annotations

import importlib
import itertools
import sys

import typer
from typer.core import TyperGroup

from defectforge import __version__
from defectforge._cliconfig import add_config_options
from defectforge._cliutil import print_error
from defectforge.errors import DefectforgeError, user_error_message


class _Group(TyperGroup):
    """Root command group, the CLI's one error boundary: a :class:`DefectforgeError` from
    any sub-command becomes one line on stderr and exit code 2 (also under
    ``typer.testing.CliRunner``), never a traceback; Ctrl-C exits 130 with one line."""

    def parse_args(self, ctx, args):
        from defectforge._cligrammar import rewrite_renamed

        args, warnings = rewrite_renamed(self, list(args))  # old spellings: still work, with a warning
        root_flags = set(itertools.takewhile(lambda a: a.startswith("-"), args))
        for line in warnings if not root_flags & {"-q", "--quiet"} else ():
            print(line, file=sys.stderr)
        ctx.meta["defectforge.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (DefectforgeError, OSError, UnicodeDecodeError) as exc:
            message = user_error_message(exc)  # OSError: unwritable output, full disk, ...
            if message is None:
                raise
            print_error(message)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            from defectforge._cligrammar import interrupted_line

            print(interrupted_line(self, ctx.meta.get("defectforge.args", [])), file=sys.stderr)
            raise typer.Exit(130) from None


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
    "defectforge.recipe.cli",
    "defectforge.demo",
    "defectforge.studio.cli",
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
add_config_options(app)  # --config/--print-config on every job command, in this one place


def main(argv: list[str] | None = None) -> None:
    """The ``defectforge`` console script."""
    app(args=argv, prog_name="defectforge")


if __name__ == "__main__":
    main()
