"""Benchmark: every command of the README's tour, as written there, on full BSData, timed.

The commands are read from the README itself (the ``bash`` block under "A short tour"; ``\\``
continuations joined, comments dropped), so this page always times what the README shows. They
run one after another, in the README's order, in a fresh work folder (``bench/_work/tour``),
each with a time limit (``--timeout``); a command past it is stopped and its last progress line
kept (the long jobs resume when rerun, so a stopped one is not lost work for a user). Placeholders
that name files this machine does not have are replaced or skipped, and the page says which:

- ``../shared/datasets/bsdata`` -> the BSData folder beside the repository (``--data``);
- ``some/*.jpg`` -> the first ``--predict-n`` BSData TEST images;
- commands that need a user's own files (``/data/real3d-ad``, ``/models/...``, ``scan.stl``) or
  are interactive (``studio``) are listed as skipped, with the reason.

    python bench/bench_tour.py [--timeout 900] [--out docs/bench/tour.md]

Writes the page (command, exit code, seconds, last line) after every command.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _machine import uptime  # noqa: E402  (the load line every bench records)

DATA = REPO.parent / "shared" / "datasets" / "bsdata"
WORK = REPO / "bench" / "_work" / "tour"

SKIP = {  # a token of the command -> why it is not run here
    "/data/real3d-ad": "needs a Real3D-AD / Anomaly-ShapeNet download (the 3D detectors are timed in docs/bench/detect3d.md)",
    "/models/": "needs SDXL weights in a local folder (docs/diffusion.md; timed on a GPU in docs/bench/diffusion.md)",
    "scan.stl": "needs the user's own scan file",
    "studio": "interactive web app (checked on full BSData by bench/studio_bsdata_check.py, docs/studio.md)",
}


def tour_commands(readme: Path) -> list[str]:
    """The tour's command lines, in order: ``\\`` continuations joined, comments and blank lines
    dropped."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"^## A short tour\s*$.*?^```bash\n(.*?)^```", text, flags=re.S | re.M)
    if m is None:
        raise SystemExit("README.md: no ```bash block under '## A short tour'")
    lines, cur = [], ""
    for raw in m.group(1).splitlines():
        part = raw.rstrip()
        if part.endswith("\\"):
            cur += part[:-1] + " "
            continue
        cur += part
        words = shlex.split(cur, comments=True)
        cur = ""
        if words:
            lines.append(shlex.join(words))
    return lines


def prepare(cmd: str, data: Path, test_images: list[str]) -> tuple[list[str] | None, str]:
    """``(argv, note)``: the command with this machine's paths, or ``(None, reason)`` to skip."""
    words = shlex.split(cmd)
    if words[0] != "defectforge":
        return None, "not a defectforge command (shell set-up)"
    for token, why in SKIP.items():
        if any(token == w or (token.startswith("/") and w.startswith(token)) for w in words):
            return None, why
    argv, note = [], ""
    for w in words:
        if w == "some/*.jpg":
            argv += test_images
            note = f"`some/*.jpg` = {len(test_images)} BSData TEST images"
        else:
            argv.append(w.replace("../shared/datasets/bsdata", str(data)))
    return argv, note


def _take_sigint() -> None:
    """In the child: SIGINT back to its default, so that Python turns it into KeyboardInterrupt
    (a benchmark started in the background, ``nohup ... &``, inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(argv: list[str], timeout: float, env: dict) -> tuple[int | None, float, str]:
    """``(exit code or None when stopped, seconds, last non-empty output line)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=WORK, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_take_sigint)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the jobs print their resume line
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        code = None
    secs = time.perf_counter() - t0
    text = out.decode("utf-8", "replace").replace("\r", "\n")
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    return code, secs, last[:200]


def write_page(rows: list[dict], args, started: str, up0: str, up1: str) -> None:
    from defectforge._atomic import atomic_write_text

    lines = ["# Benchmark: the README's tour on full BSData, command by command", "",
             f"- Date: {started} UTC; machine: {os.uname().machine}, {os.cpu_count()} CPUs; "
             f"{args.machine}",
             f"- Command: `python bench/bench_tour.py {shlex.join(args.argv)}` (venv already built; "
             "the commands read from README.md's tour, run one after another in a fresh folder)",
             f"- Load: before `{up0}`; after `{up1}`",
             "- Data: full BSData (`../shared/datasets/bsdata`: TRAIN 402 good / 63 pitting, TEST 268 / 104)", "",
             "| # | command (as in the README) | exit | seconds | last line |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        cmd = r["cmd"] if len(r["cmd"]) <= 140 else r["cmd"][:137] + "..."
        if r.get("skipped"):
            lines.append(f"| {i} | `{cmd}` | skipped | | {r['skipped']} |")
            continue
        code = "stopped" if r["code"] is None else str(r["code"])
        last = r["last"].replace("|", "\\|")
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {i} | `{cmd}`{note} | {code} | {r['secs']:.1f} | {last} |")
    atomic_write_text(args.out, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per command before it is stopped")
    ap.add_argument("--predict-n", type=int, default=32)
    ap.add_argument("--only", default="", help="comma-separated command numbers (1-based) to run; default all")
    ap.add_argument("--machine", default="", help="a few words on the machine, for the page")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "tour.md")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not (args.data / "split.csv").is_file():
        sys.exit(f"BSData not found at {args.data}")
    import shutil

    from defectforge.data import load_dataset

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    test = [str(s.path) for s in load_dataset(args.data) if s.split == "test"][: args.predict_n]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               COLUMNS="200")
    only = {int(v) for v in args.only.split(",") if v.strip()}
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    up0 = uptime()
    rows: list[dict] = []
    for i, cmd in enumerate(tour_commands(REPO / "README.md"), 1):
        if only and i not in only:
            continue
        argv_, note = prepare(cmd, args.data, test)
        if argv_ is None:
            rows.append({"cmd": cmd, "skipped": note})
            continue
        print(f"[{i}] {cmd}", flush=True)
        code, secs, last = run(argv_, args.timeout, env)
        rows.append({"cmd": cmd, "code": code, "secs": secs, "last": last, "note": note})
        print(f"    exit {code} in {secs:.1f} s: {last}", flush=True)
        up1 = uptime()
        write_page(rows, args, started, up0, up1)
    up1 = uptime()
    write_page(rows, args, started, up0, up1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
