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


IMAGE_SIZE_HELP = "N (shorter side, aspect kept) or HxW"


def parse_image_size(text: str | int | None, option: str = "--image-size",
                     square_ok: bool = True) -> int | tuple[int, int] | None:
    """The one reading of an image-size option on every command: ``N`` (shorter side) or
    ``HxW``. ``square_ok=False``: the command takes ``N`` only (HxW is a one-line error)."""
    from defectforge.errors import ConfigError

    if text is None:
        return None
    s = str(text).strip().lower()
    try:
        if "x" in s:
            h, w = s.split("x")
            size: int | tuple[int, int] = (int(h), int(w))
        else:
            size = int(s)
    except ValueError:
        raise ConfigError(f"{option} must be N (shorter side) or HxW, got {text!r}") from None
    if min(size if isinstance(size, tuple) else (size,)) < 1:
        raise ConfigError(f"{option} must be positive, got {text!r}")
    if isinstance(size, tuple) and not square_ok:
        raise ConfigError(f"{option} takes N (the shorter side) for this command, got {text!r}")
    return size
