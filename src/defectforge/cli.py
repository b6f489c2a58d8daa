"""The ``defectforge`` command line (typer + rich).

Each area registers its own commands from a small module (``defectforge.<area>.cli``
with a ``register(app)`` function), so this file stays a table of contents. Heavy
imports (torch, timm) happen inside commands, never at start-up, and the console script
(:func:`main`) imports only the area of the command it runs (:data:`COMMAND_OWNERS`);
``defectforge.cli.app`` is always the whole tree (every area registered on first access).

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
import os
import sys

import typer
from typer.core import TyperGroup

from defectforge import __version__
from defectforge._cliconfig import add_config_options
from defectforge._cliutil import print_error
from defectforge.errors import DefectforgeError, user_error_message


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def is_ours(category: type, filename: str) -> bool:
    """Whether a warning is defectforge's: a warning class of ours, or any warning (e.g. a plain
    ``UserWarning``) attributed to a line of this package."""
    return category.__module__.startswith("defectforge") or os.path.abspath(str(filename)).startswith(_PACKAGE_DIR)


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
        import warnings

        default_format = warnings.formatwarning

        def one_line(message, category, filename, lineno, line=None):  # ours: what happened, not where
            if is_ours(category, filename):
                return f"warning: {message}\n"
            return default_format(message, category, filename, lineno, line)

        warnings.formatwarning = one_line
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
        finally:
            warnings.formatwarning = default_format


_app = typer.Typer(
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

# top-level command or group name -> the module that registers it (checked against the
# modules by tests/test_cli_lazy.py), so ``defectforge detect fit`` imports one area, not all
COMMAND_OWNERS = {
    "data": "defectforge.data.cli",
    "synth": "defectforge.synth2d.cli",
    "synth-generators": "defectforge.synth2d.cli",
    "lora": "defectforge.synth2d.diffusion.cli",
    "diffusion": "defectforge.synth2d.diffusion.cli",
    "synth3d": "defectforge.synth3d.cli",
    "parts": "defectforge.synth3d.cli",
    "detect": "defectforge.detect.cli",
    "detect3d": "defectforge.detect3d.cli",
    "filter": "defectforge.filter.cli",
    "train-detector": "defectforge.supervised.cli",
    "experiment": "defectforge.experiments.cli",
    "recipe": "defectforge.recipe.cli",
    "demo": "defectforge.demo",
    "studio": "defectforge.studio.cli",
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"defectforge {__version__}")
        raise typer.Exit()


@_app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and requested output (no progress)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print log messages and every warning."),
) -> None:
    """defectforge: generate, filter and use synthetic defects."""
    from defectforge import _verbosity

    _verbosity.set_level(_verbosity.QUIET if quiet else _verbosity.VERBOSE if verbose else _verbosity.NORMAL)


_registered: list[str] = []


def _register(modules) -> None:
    """Register the commands of ``modules`` (and of those registered before) on the root app,
    in :data:`COMMAND_MODULES` order, with ``--config``/``--print-config`` on every job command."""
    wanted = set(modules) | set(_registered)
    if wanted <= set(_registered):
        return
    _app.registered_commands.clear()  # re-register in table order: --help lists areas in that order
    _app.registered_groups.clear()
    _registered.clear()
    for name in COMMAND_MODULES:
        if name not in wanted:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # area not installed
                continue
            raise
        module.register(_app)
        _registered.append(name)
    add_config_options(_app)  # --config/--print-config on every job command, in this one place


def area_app(*areas) -> typer.Typer:
    """A root app with only the commands of ``areas`` (area modules, or their ``register``
    functions), wired as the console script wires them: the one error boundary, ``--config``
    / ``--print-config`` and the one reading of ``--device``. For tests and for embedding an
    area; its behaviour does not depend on whether the whole tree was built before."""
    app = typer.Typer(cls=_Group)
    for area in areas:
        getattr(area, "register", area)(app)

    @app.callback()
    def _area_root() -> None:
        """defectforge (one area)."""

    add_config_options(app)
    return app


def _needed(argv: list[str]) -> tuple[str, ...]:
    """The area modules that running ``argv`` needs: the one that registers the command it
    names (after the root options); none for ``--version``; every area when all commands
    are listed or looked up (no command, ``--help``, a typo)."""
    for tok in argv:
        if tok == "--version":
            return ()
        if tok == "--help":
            return COMMAND_MODULES
        if not tok.startswith("-"):
            return (COMMAND_OWNERS[tok],) if tok in COMMAND_OWNERS else COMMAND_MODULES
    return COMMAND_MODULES


def __getattr__(name: str):
    if name == "app":  # the whole command tree (tests, the studio, docs): every area registered
        _register(COMMAND_MODULES)
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """The ``defectforge`` console script: imports only the area of the command it runs
    (start-up ~0.4 s instead of ~2 s for ``detect``), every area for ``--help`` and typos."""
    args = list(sys.argv[1:] if argv is None else argv)
    _register(_needed(args))
    _app(args=args, prog_name="defectforge")


if __name__ == "__main__":
    main()
