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


STAGES: list[tuple[str, Callable[[DemoContext], dict]]] = [
    ("data", stage_data),
]


def run_demo(out_dir: str | Path = "demo_out", seed: int = 0, quick: bool = False,
             progress: Callable[[str], None] | None = None) -> dict:
    """Run every demo stage; returns the summary that is also written to ``summary.json``."""
    from defectforge.datasets import load_sample

    out = Path(out_dir)
    report = Report("defectforge demo", out, subtitle="synthesise -> detect -> evaluate, on the bundled BSData sample")
    ctx = DemoContext(out, seed, report, load_sample(), quick=quick)
    summary: dict[str, Any] = {"seed": seed, "stages": {}}
    for name, fn in STAGES:
        if progress:
            progress(name)
        t0 = time.perf_counter()
        result = fn(ctx)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        summary["stages"][name] = result
        report.save()  # the report is usable after every stage
    summary["report"] = str(report.save())
    atomic_write_json(out / "summary.json", summary)
    return summary


def register(app) -> None:
    import typer

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo_out"), "--out", help="Output folder for report.html and summary.json."),
        seed: int = typer.Option(0, help="Seed for synthesis and coresets."),
        quick: bool = typer.Option(False, help="Smaller settings (used by the tests)."),
    ) -> None:
        """Run the whole pipeline on the bundled BSData sample and write an HTML report."""
        from rich.console import Console

        console = Console()
        t0 = time.perf_counter()
        with console.status("starting") as status:
            summary = run_demo(out, seed=seed, quick=quick, progress=lambda s: status.update(f"demo stage: {s}"))
        for name, res in summary["stages"].items():
            console.print(f"[green]done[/] {name} ({res['seconds']:.1f} s)")
        console.print(f"report: [bold]{summary['report']}[/]")
        console.print(f"summary: {Path(out) / 'summary.json'}  (total {time.perf_counter() - t0:.0f} s)")
