"""``defectforge studio [PROJECT_DIR]``: start the web app and print its URL."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("studio")(studio)


def studio(
    project: Path = typer.Argument(Path("."), metavar="PROJECT", help="Project folder: datasets, synthetic sets and models live here."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; any other than 127.0.0.1/localhost needs the printed token."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    llm_url: str = typer.Option(None, "--llm-url", help="OpenAI-compatible base URL for the 3D describe box (rule parser otherwise)."),
    llm_model: str = typer.Option("gpt-4o-mini", "--llm-model", help="Model name for --llm-url."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="NAME=FOLDER: mount a dataset folder outside the project "
                                                                   "read-only as @NAME (symlinks that leave the project are refused); repeatable."),
) -> None:
    """Start Defect Studio, the interactive web app, over PROJECT_DIR."""
    import secrets

    from defectforge.errors import ConfigError, InputError

    if not project.is_dir():
        raise InputError(project, "project folder not found")
    try:
        import uvicorn

        from defectforge.studio.app import create_app
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the studio needs the [studio] extra ({exc.name} is missing): "
                          "pip install 'defectforge[studio]'") from None
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a valid port (1..65535)")
    local = host in ("127.0.0.1", "localhost", "::1")
    token = None if local else secrets.token_urlsafe(16)
    llm = None
    if llm_url:
        from defectforge.llm import ChatClient

        llm = ChatClient(llm_url, llm_model)
    mounts = {}
    for spec in data or []:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--data {spec!r}: give NAME=FOLDER, e.g. --data bsdata=../shared/datasets/bsdata")
        mounts[name] = Path(folder)
    app = create_app(project, token=token, llm=llm, mounts=mounts)
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    typer.echo(f"defect studio on {project.resolve()}: open {url}")
    for name, folder in mounts.items():
        typer.echo(f"  @{name} -> {folder.resolve()} (read-only)")
    if token:
        typer.echo(f"token (needed on every request from another machine): {token}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
