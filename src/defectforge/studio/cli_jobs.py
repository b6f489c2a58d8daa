"""Jobs that run a ``defectforge`` CLI command itself (``detect fit``, ``detect eval``,
``detect predict``) in a child process: literally the CLI's code path, outputs and errors.

A job config is ``{"command": "detect fit", "args": {"data": "bsdata", "model": "exdd", ...}}``.
The allowed argument names, which of them are paths and which are flags are read from the
CLI's own parameter declarations (click), so nothing is listed twice; every path is resolved
inside the project; the child gets an argument list (no shell). Live progress: the child's
progress callbacks write JSON lines to ``PROJECT/.studio/logs/<job>.progress.jsonl``
(``DEFECTFORGE_PROGRESS_FILE``, :mod:`defectforge.progress`), which the job follows. Cancel
sends SIGINT (the CLI stops cleanly, atomic outputs are either whole or absent); resume runs
the command again: ``detect predict`` skips the images already scored, ``detect fit`` and
``detect eval`` start over (they write their outputs once, at the end). The log is kept in
``PROJECT/.studio/logs/<job>.log``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from defectforge.errors import DefectforgeError
from defectforge.studio.forms import FieldError

COMMANDS = ("detect fit", "detect eval", "detect predict")
WRITES = ("out", "json_out", "report")  # parameters naming something the command writes


def _command(name: str):
    import typer

    from defectforge.cli import app

    if name not in COMMANDS:
        raise FieldError("command", f"command {name!r} cannot run as a job (choose from {', '.join(COMMANDS)})")
    cmd = typer.main.get_command(app)
    for part in name.split():
        cmd = cmd.commands[part]
    return cmd


def command_form(name: str) -> list[dict[str, Any]]:
    """The command's parameters: name, option, flag, path, required, default, help."""
    out = []
    for p in _command(name).params:
        if p.name in ("help", "print_config"):  # --print-config runs nothing: not a job
            continue
        default = p.default if isinstance(p.default, (str, int, float, bool, type(None))) else None
        out.append({"name": p.name, "option": None if p.param_type_name == "argument" else p.opts[0],
                    "flag": bool(getattr(p, "is_flag", False)), "path": _is_path(p), "required": bool(p.required),
                    "default": default, "help": getattr(p, "help", "") or "",
                    "multiple": bool(getattr(p, "multiple", False) or p.nargs == -1)})
    return out


def _is_path(p) -> bool:
    """Whether the parameter is declared as a Path (``Path``, ``Optional[Path]``, ``List[Path]``)."""
    import typing

    ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    if ann is None:  # older typer: a click Path type
        return type(getattr(p, "type", None)).__name__ == "Path"
    seen, todo = set(), [ann]
    while todo:
        a = todo.pop()
        if a is Path:
            return True
        if id(a) not in seen:
            seen.add(id(a))
            todo += list(typing.get_args(a))
    return False


def argv(st, config: dict[str, Any]) -> list[str]:
    """The argument list for ``config`` (paths resolved inside the project); refuses unknown names."""
    name = str(config.get("command", ""))
    form = {f["name"]: f for f in command_form(name)}
    args = config.get("args") or {}
    if not isinstance(args, dict):
        raise FieldError("config", "'args' must be a mapping of parameter names to values")
    unknown = sorted(set(args) - set(form))
    if unknown:
        raise FieldError("config", f"{name}: unknown parameter(s) {unknown} (known: {', '.join(form)})")
    missing = [k for k, f in form.items() if f["required"] and args.get(k) in (None, "", [])]
    if missing:
        raise FieldError("config", f"{name}: missing required parameter(s) {missing}")
    pos: list[str] = []
    opts: list[str] = []
    for key, f in form.items():
        if key not in args or args[key] is None:
            continue
        if isinstance(args[key], list) and not f["multiple"]:  # the child would fail on the extra value
            raise FieldError("config", f"{name}: {key} takes one value, got a list of {len(args[key])}")
        values = args[key] if isinstance(args[key], list) else [args[key]]
        if f["path"]:
            values = [str(st.paths.resolve(str(v), write=key in WRITES, must_exist=key not in WRITES)) for v in values]
        if f["option"] is None:
            pos += [str(v) for v in values]
        elif f["flag"]:
            if args[key] is True:
                opts.append(f["option"])
        else:
            for v in values:
                opts += [f["option"], str(v)]
    return name.split() + pos + opts


def command_line(st, config: dict[str, Any]) -> str:
    """The job as the command a person would type (paths as the child gets them)."""
    import shlex

    return "defectforge " + " ".join(shlex.quote(a) for a in argv(st, config))


def _child_setup() -> None:
    """In the child before ``exec``: die with the server (no orphan writing), and take SIGINT
    (cancel) with the default action even when the server was started with it ignored (e.g.
    as a background job of a shell), so that Python turns it into ``KeyboardInterrupt``."""
    from defectforge._pool import kill_me_with_parent

    kill_me_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(st, job: dict[str, Any], cancelled: Callable[[], bool],
        progress: Callable[[str, int, int | None], None] | None = None) -> str:
    """Run the job's command to the end (or until cancelled); raises on failure.
    ``progress(stage, done, total)`` gets the child's progress as it comes."""
    import os

    from defectforge.progress import PROGRESS_FILE_ENV
    from defectforge.studio.jobs import Cancelled

    cmd = [sys.executable, "-m", "defectforge", *argv(st, job["config"])]
    log = st.paths.root / ".studio" / "logs" / f"{job['id']}.log"
    prog = log.with_suffix(".progress.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    prog.write_text("", encoding="utf-8")  # this run's progress only
    job["log"] = str(log.relative_to(st.paths.root))
    follow = _Follow(prog, progress)
    with open(log, "ab") as fh:
        fh.write(("$ defectforge " + " ".join(cmd[3:]) + "\n").encode())
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=st.paths.root, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, PROGRESS_FILE_ENV: str(prog)},
                                preexec_fn=_child_setup)
        while proc.poll() is None:
            follow()
            if cancelled():
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if proc.returncode != 0:  # stopped; one that had already finished is done, not cancelled
                    raise Cancelled()
                break
            time.sleep(0.2)
    follow()
    tail = _tail(log)
    if proc.returncode != 0:
        err = next((ln for ln in reversed(tail) if ln.startswith("error:")), None)
        if err is None:  # a usage error: click prints it inside a box, whose last line is only its border
            boxed = [ln.strip().strip("│").strip() for ln in tail if ln.strip().startswith("│")]
            err = " ".join(b for b in boxed if b) or (tail[-1] if tail else "")
        how = f"exited with {proc.returncode}" if proc.returncode > 0 else f"was killed by signal {-proc.returncode}" + (
            " (SIGKILL: often the out-of-memory killer)" if proc.returncode == -9 else "")
        raise DefectforgeError(f"{job['config']['command']} {how}: {err}")
    return tail[-1] if tail else "done"


class _Follow:
    """Reads the complete JSON lines added to the progress file since the last call."""

    def __init__(self, path: Path, progress: Callable[[str, int, int | None], None] | None):
        self.path, self.progress, self.offset = path, progress, 0

    def __call__(self) -> None:
        import json

        if self.progress is None:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        for line in data[:end].splitlines():
            try:
                d = json.loads(line)
                self.progress(str(d["stage"]), int(d["done"]), None if d["total"] is None else int(d["total"]))
            except (ValueError, KeyError, TypeError):
                continue


def _tail(log: Path, n: int = 20) -> list[str]:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [ln.strip() for ln in lines[-n:] if ln.strip()]
