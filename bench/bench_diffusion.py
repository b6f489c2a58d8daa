"""Benchmark of the diffusion backend on CPU with the tiny random pipeline (no weights needed).

Measures: building + saving the tiny SDXL-inpainting pipeline, loading it through
``load_inpaint_pipeline``, inpainting per image (64 px, 2 and 30 steps, batch 1 and 4),
and one LoRA training step. These are plumbing costs, NOT realistic model times: a real
SDXL inpainting model is ~1000x larger. Writes ``docs/bench/diffusion.md``.

    .venv/bin/python bench/bench_diffusion.py [--threads 1] [--out docs/bench/diffusion.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from defectforge._atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on busy cores)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "diffusion.md")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from defectforge.synth2d.diffusion.inpaint import inpaint_batch
    from defectforge.synth2d.diffusion.loading import load_inpaint_pipeline
    from defectforge.synth2d.diffusion.lora_train import LoraTrainConfig, LoraTrainer, make_items
    from defectforge.synth2d.diffusion.tiny import build_tiny_inpaint_pipeline

    rows: list[tuple[str, str, float]] = []
    load1 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "tiny"
        rows.append(("build + save tiny SDXL-inpaint pipeline", "1 pipeline",
                     best_of(lambda: build_tiny_inpaint_pipeline(d), 2)))
        rows.append(("load_inpaint_pipeline (tiny, CPU, fp32)", "1 pipeline",
                     best_of(lambda: load_inpaint_pipeline(d), 2)))
        pipe = load_inpaint_pipeline(d)
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        m = np.zeros((64, 64), bool)
        m[20:40, 20:40] = True
        for steps in (2, 30):
            for batch in (1, 4):
                t = best_of(lambda: inpaint_batch(pipe, [img] * batch, [m] * batch, ["dark pits"] * batch,
                                                  ["smooth"] * batch, list(range(batch)), num_inference_steps=steps,
                                                  guidance_scale=20.0, strength=0.99, padding_mask_crop=2,
                                                  resolution=64), 2)
                rows.append((f"inpaint 64 px, {steps} steps, batch {batch}", "per image", t / batch))
        cfg = LoraTrainConfig(model=str(d), out=str(Path(tmp) / "lora"), instance_prompt="dark pit", steps=10,
                              resolution=64, min_crop=32, samples=0, checkpoint_every=1000, lr=1e-3)
        items = make_items([img], [m], cfg)
        tr = LoraTrainer(cfg, pipe=load_inpaint_pipeline(d))
        t0 = time.perf_counter()
        tr.fit(items)
        rows.append(("LoRA training step (rank 4, 64 px, batch 1)", "per step", (time.perf_counter() - t0) / cfg.steps))
    load2 = os.getloadavg()[0]
    lines = [
        "# Diffusion backend on CPU (tiny random pipeline)",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}, "
        f"{args.threads} torch thread(s); load average {load1:.1f} -> {load2:.1f} "
        "(other jobs were running on the same cores)",
        "- command: `.venv/bin/python bench/bench_diffusion.py"
        + (f" --threads {args.threads}`" if args.threads != 1 else "`"),
        "- model: tiny random SDXL inpainting pipeline (`defectforge diffusion tiny`), UNet 32/64 channels, "
        "9 input channels; outputs are noise. These numbers measure plumbing, not real models.",
        "- realistic times: no GPU was available for this run; real SDXL inpainting at 1024 px is GPU work "
        "and was not measured here.",
        "",
        "| what | unit | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c:.3f} |" for a, b, c in rows]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
