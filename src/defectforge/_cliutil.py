"""Small helpers shared by every CLI module: the one-line error printer (used by the root
command group, the CLI's one error boundary, see :mod:`defectforge.cli`) and a console."""

from __future__ import annotations


def print_error(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")


def console():
    """A rich console for command output (no syntax highlighting, no hard wrapping; silent
    under ``defectforge -q``)."""
    from rich.console import Console

    from defectforge._verbosity import is_quiet

    return Console(highlight=False, soft_wrap=True, quiet=is_quiet())
