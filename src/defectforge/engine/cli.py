"""The ``--engine`` / ``--ray-address`` options every scale-out command shares."""

from __future__ import annotations

from typing import Optional

import typer

ENGINE_HELP = "Where items run: local (this machine's worker processes) or ray (a Ray cluster)."
ADDRESS_HELP = ("With --engine ray: the cluster to attach to (auto, host:port or ray://host:port); "
                "default: start a local Ray.")


def engine_option() -> str:
    return typer.Option("local", "--engine", help=ENGINE_HELP)


def address_option() -> Optional[str]:
    return typer.Option(None, "--ray-address", help=ADDRESS_HELP)


def open_engine(engine: str, address: str | None, workers: int | None):
    """The engine the options ask for (a :class:`~defectforge.engine.Engine`, a context manager)."""
    from defectforge.engine import get_engine

    return get_engine(engine, workers=workers, address=address)
