"""Benchmarks of the 2D synthesis engine.

``--throughput`` (default): labelled samples per second at 1130 x 460 (BSData train good
images) for every built-in generator, through the whole pipeline (generation, label
derivation, PNG files, journal, manifest, dataset card and MVTec + YOLO (detect and
segment) + COCO exports) with 2 worker processes; plus the in-process cost per sample
(generate + derive_label, one core), against anomalib 2.7's ``PerlinAnomalyGenerator``
(probability 1, no texture folder, CPU, torch on 2 threads) on the same images in the
same script. anomalib makes an image and a mask in memory only (no labels, no files).
Run it with ``.venv-bench/bin/python`` (anomalib is installed there); without anomalib
the comparison is reported as pending.

``--usefulness``: on BSData, ExDD with a synthetic-only defect bank (0, 50, 100, 150
``pitting`` images made on train good images with the train masks' statistics) vs
PatchCore vs ExDD with the 63 real train defects vs both (real + 100 synthetic); I-AUROC,
P-AUROC, AUPRO on the test split over seeds, mean +- std. ``--normal``/``--test-good``
subsample for a reduced run (stated in the output).

    .venv-bench/bin/python bench/bench_synth2d.py --throughput [--n 40]
    .venv/bin/python bench/bench_synth2d.py --usefulness [--seeds 0 1 2] [--normal 402]

Results are appended to / written in ``docs/bench/synth2d.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BSDATA = REPO.parent / "shared" / "datasets" / "bsdata"
OUT_MD = REPO / "docs" / "bench" / "synth2d.md"
GENERATORS = ["pitting", "scratch", "crack", "stain", "dent", "texture", "cutpaste", "cutpaste_scar", "transplant"]


def _header(title: str, cmd: str) -> list[str]:
    return [f"## {title}", "", f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- machine: {os.cpu_count()}-core CPU ({platform.machine()}), Python {platform.python_version()}; "
            f"load average {os.getloadavg()[0]:.1f} when the run started (above ~{os.cpu_count()} means other jobs "
            "shared the cores)", f"- command: `{cmd}`", ""]


def _write_section(name: str, lines: list[str]) -> None:
    """Replace (or add) the section starting with '## name' in docs/bench/synth2d.md."""
    from defectforge._atomic import atomic_write_text

    text = OUT_MD.read_text() if OUT_MD.is_file() else "# 2D synthesis benchmarks\n\n"
    parts = text.split("\n## ")
    head, secs = parts[0], ["## " + p for p in parts[1:]]
    new = "\n".join(lines).rstrip() + "\n"
    secs = [s if not s.startswith(f"## {name}") else new for s in secs]
    if not any(s.startswith(f"## {name}") for s in secs):
        secs.append(new)
    atomic_write_text(OUT_MD, head.rstrip() + "\n\n" + "\n".join(s.rstrip() + "\n" for s in secs))


# -- throughput ------------------------------------------------------------------------------------
def throughput(n: int, n_images: int, workers: int, generators: list[str] | None = None) -> None:
    from defectforge.data.formats import load_dataset
    from defectforge.synth2d import derive_label, get_generator, parse_config, synthesize
    from defectforge.synth2d.pipeline import prepare

    ds = load_dataset(BSDATA)
    goods = ds.filter(split="train", label="good").samples[:n_images]
    imgs = [s.rgb() for s in goods]
    assert imgs[0].shape == (460, 1130, 3)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth2d_"))
    try:
        for name in generators or GENERATORS:
            cfg = parse_config({"source": {"path": str(BSDATA), "good": n_images},
                                "generators": [{"name": name}], "n": n, "seed": 0,
                                "formats": ["mvtec", "yolo", "coco"]})
            t0 = time.perf_counter()
            run = synthesize(cfg, tmp / name, workers=workers, gallery=0)
            wall = time.perf_counter() - t0
            # in-process cost of generate + derive_label (one core), warm
            engine, _ = prepare(cfg)
            gen = engine.generators[0][0]
            rng = np.random.default_rng(1)
            k = min(20, n)
            t1 = time.perf_counter()
            rej = 0
            for i in range(k):
                img = imgs[i % len(imgs)]
                r = gen.generate(img, rng, None)
                rej += not derive_label(img, r.image, r.mask).accepted
            per = (time.perf_counter() - t1) / k
            rows.append((name, len(run.samples), wall, len(run.samples) / wall, per * 1000, run.n_rejected))
            shutil.rmtree(tmp / name, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ano = anomalib_perlin(imgs, n)
    exe = Path(sys.executable).relative_to(REPO) if str(sys.executable).startswith(str(REPO)) else sys.executable
    cmd = f"{exe} bench/bench_synth2d.py --throughput --n {n} --images {n_images} --workers {workers}"
    lines = _header("Throughput at 1130 x 460", cmd)
    lines += [f"Pipeline: {n} samples per generator from {n_images} BSData train good images, {workers} workers, "
              "formats mvtec + yolo (detect and segment) + coco, no gallery; wall time includes start-up "
              "(worker spawn, loading the source and real defects), label derivation, PNG writing and exports.", "",
              "| generator | samples | pipeline wall (s) | labelled samples/s (all included) | generate + label, 1 core (ms/sample) | rejected attempts |",
              "|---|---|---|---|---|---|"]
    for name, k, wall, sps, ms, rj in rows:
        lines.append(f"| {name} | {k} | {wall:.1f} | {sps:.2f} | {ms:.1f} | {rj} |")
    lines.append("")
    if ano is None:
        lines.append("anomalib 2.7 `PerlinAnomalyGenerator`: **pending** (anomalib not importable in this interpreter; "
                     "run with `.venv-bench/bin/python`).")
    else:
        ms, sps, ver = ano
        lines += [f"anomalib {ver} `PerlinAnomalyGenerator(probability=1.0)` (no texture folder, so the texture is "
                  f"the noise itself), CPU, torch {ano_torch()} with 2 threads, same images, in memory only "
                  f"(image + mask tensors; no label derivation, no files): **{ms:.1f} ms/sample = {sps:.2f} samples/s** "
                  f"(mean of {n} calls after 2 warm-up calls)."]
    lines.append("")
    _write_section("Throughput", lines)
    print("\n".join(lines))


def ano_torch() -> str:
    import torch

    return torch.__version__


def anomalib_perlin(imgs: list[np.ndarray], n: int):
    try:
        import anomalib
        import torch
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
    except Exception:
        return None
    torch.set_num_threads(2)
    gen = PerlinAnomalyGenerator(probability=1.0)
    ts = [torch.from_numpy(im).permute(2, 0, 1).float().div(255) for im in imgs]
    for i in range(2):
        gen(ts[i % len(ts)])
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(n):
            img, mask = gen(ts[i % len(ts)])
    per = (time.perf_counter() - t0) / n
    return per * 1000, 1 / per, anomalib.__version__


# -- usefulness ----------------------------------------------------------------------------------------
def usefulness(seeds: list[int], n_normal: int | None, n_test_good: int | None, image_size: int,
               synth_counts: list[int], backbone: str) -> None:
    from defectforge.data.formats import load_dataset
    from defectforge.detect.evaluate import evaluate_detector
    from defectforge.detect.exdd import ExDD, PatchCore
    from defectforge.synth2d import generate_samples

    ds = load_dataset(BSDATA)
    normal = ds.filter(split="train", label="good").samples
    reals = ds.filter(split="train", label="pitting").samples
    test = ds.filter(split="test").samples
    if n_normal:
        normal = normal[:n_normal]
    if n_test_good:
        tg = [s for s in test if not s.is_defect][:n_test_good]
        test = tg + [s for s in test if s.is_defect]
    results: dict[str, list[dict]] = {}
    t_all = time.perf_counter()
    for seed in seeds:
        syn_all = generate_samples(normal, "pitting", max(synth_counts + [100]), seed=seed, real_defects=reals,
                                   roi="auto") if max(synth_counts + [100]) > 0 else []
        variants = [("PatchCore", PatchCore, None)]
        for k in synth_counts:
            variants.append((f"ExDD synthetic {k}", ExDD, syn_all[:k]))
        variants.append(("ExDD real 63", ExDD, reals))
        variants.append(("ExDD real 63 + synthetic 100", ExDD, list(reals) + syn_all[:100]))
        for name, cls, defects in variants:
            t0 = time.perf_counter()
            model = cls(backbone=backbone, image_size=image_size, seed=seed)
            model.fit(normal, defects if defects else None)
            res = evaluate_detector(model, test, split=None)
            m = res["metrics"]
            results.setdefault(name, []).append({"i_auroc": m["image_auroc"], "p_auroc": m["pixel_auroc"],
                                                 "aupro": m["aupro"], "s": time.perf_counter() - t0})
            print(f"seed {seed} {name}: I-AUROC {m['image_auroc']:.4f} P-AUROC {m['pixel_auroc']:.4f} "
                  f"AUPRO {m['aupro']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        _usefulness_md(results, seeds, seed, normal, reals, test, n_normal, n_test_good, image_size, synth_counts,
                       backbone, t_all)


def _usefulness_md(results, seeds, last_seed, normal, reals, test, n_normal, n_test_good, image_size, synth_counts,
                   backbone, t_all) -> None:
    done = seeds[: seeds.index(last_seed) + 1]
    cmd = (f".venv/bin/python bench/bench_synth2d.py --usefulness --seeds {' '.join(map(str, seeds))} "
           f"--normal {n_normal or 0} --test-good {n_test_good or 0} --image-size {image_size} "
           f"--synth {' '.join(map(str, synth_counts))} --backbone {backbone}")
    lines = _header("Usefulness on BSData", cmd)
    if done != seeds:
        lines.append(f"**Partial**: seeds {done} of {seeds} finished so far.")
        lines.append("")
    n_tg = sum(not s.is_defect for s in test)
    lines += [f"Train normal images: {len(normal)} (of 402); real train defects: {len(reals)}; test: {n_tg} good + "
              f"{sum(s.is_defect for s in test)} pitting; backbone {backbone}, image size {image_size}; "
              f"seeds {done}; synthetic = `pitting` generator on train good images, sizes/positions from the "
              "train masks' statistics (no real pixels). Total time "
              f"{(time.perf_counter() - t_all) / 60:.1f} min.", "",
              "| detector / defect bank | I-AUROC | P-AUROC | AUPRO |", "|---|---|---|---|"]
    for name, rs in results.items():
        cell = lambda k: f"{np.mean([r[k] for r in rs]):.4f} ± {np.std([r[k] for r in rs]):.4f}"  # noqa: E731
        lines.append(f"| {name} | {cell('i_auroc')} | {cell('p_auroc')} | {cell('aupro')} |")
    lines.append("")
    _write_section("Usefulness", lines)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--usefulness", action="store_true")
    ap.add_argument("--n", type=int, default=40, help="samples per generator (throughput)")
    ap.add_argument("--images", type=int, default=20, help="good source images (throughput)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--generators", nargs="+", default=None, help="subset of generators (throughput)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--normal", type=int, default=0, help="subsample train normal images (0 = all 402)")
    ap.add_argument("--test-good", type=int, default=0, help="subsample test good images (0 = all 268)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--synth", type=int, nargs="+", default=[0, 50, 100, 150])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    a = ap.parse_args()
    if not (BSDATA / "split.csv").is_file():
        raise SystemExit(f"BSData not found at {BSDATA}")
    if a.usefulness:
        usefulness(a.seeds, a.normal or None, a.test_good or None, a.image_size, a.synth, a.backbone)
    if a.throughput or not a.usefulness:
        throughput(a.n, a.images, a.workers, a.generators)


if __name__ == "__main__":
    main()
