"""Small helpers shared by every CLI module: one-line user errors and a console."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer

from defectforge.errors import DefectforgeError, user_error_message


def print_error(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`DefectforgeError` into one line ``error: <file>: <problem>`` and exit 2.

    The root ``defectforge`` command does this for every sub-command already; this context
    manager gives a sub-app used on its own (``register(typer.Typer())``) the same behaviour.
    """
    try:
        yield
    except (DefectforgeError, OSError, UnicodeDecodeError) as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print_error(message)
        raise typer.Exit(2) from None


def console():
    """A rich console for command output (no syntax highlighting, no hard wrapping; silent
    under ``defectforge -q``)."""
    from rich.console import Console

    from defectforge._verbosity import is_quiet

    return Console(highlight=False, soft_wrap=True, quiet=is_quiet())
