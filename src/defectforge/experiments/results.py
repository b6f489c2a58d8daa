"""An experiment's results: mean ± std per condition, its tables and its HTML report.

``summarize`` turns the per-seed runs into one row per condition (sample standard deviation,
ddof = 1); ``write_results`` writes ``results_runs.csv``, ``results.csv``, ``results.md``
and ``report.html`` (bar plots) into the experiment folder (:mod:`~defectforge.experiments.runner`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

PRIMARY = {"exdd-augmentation": ("i_auroc", "p_auroc"), "synsur-regimes": ("map50", "map50_95"),
           "filtering-ablation": ("i_auroc", "p_auroc", "map50", "map50_95")}


def summarize(runs: list[dict[str, Any]], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per condition (in first-seen order): n seeds, mean and std (ddof=1) of each metric."""
    order: list[str] = []
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["condition"] not in by:
            order.append(r["condition"])
            by[r["condition"]] = []
        by[r["condition"]].append(r)
    out = []
    for c in order:
        rows = by[c]
        row: dict[str, Any] = {"condition": c, "n_seeds": len(rows)}
        for m in metrics:
            vals = np.array([float(r[m]) for r in rows if m in r and r[m] is not None], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if len(vals) == 0:
                continue
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        out.append(row)
    return out


def _markdown(summary: list[dict[str, Any]], metrics: tuple[str, ...]) -> str:
    ms = [m for m in metrics if any(f"{m}_mean" in r for r in summary)]
    lines = ["| condition | seeds | " + " | ".join(ms) + " |", "|---|---|" + "---|" * len(ms)]
    for r in summary:
        cells = []
        for m in ms:
            if f"{m}_mean" not in r:
                cells.append("–")
            else:
                sd = r[f"{m}_std"]
                cells.append(f"{r[f'{m}_mean']:.4f} ± {sd:.4f}" if math.isfinite(sd) else f"{r[f'{m}_mean']:.4f}")
        lines.append(f"| {r['condition']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_results(out: Path, name: str, sj: dict[str, Any], conds: list, runs: list[dict[str, Any]]) -> dict[str, Any]:
    from defectforge._atomic import atomic_write_text

    metrics = PRIMARY[name]
    order = {c: i for i, (c, _) in enumerate(conds)}
    runs.sort(key=lambda r: (order[r["condition"]], r["seed"]))
    summary = summarize(runs, metrics)
    md = f"### {name}\n\n" + _markdown(summary, metrics)
    atomic_write_text(out / "results_runs.csv", _csv_text(runs))
    atomic_write_text(out / "results.csv", _csv_text(summary))
    atomic_write_text(out / "results.md", md)
    _report(out, name, sj, runs, summary, metrics, md)
    return {"runs": runs, "summary": summary, "markdown": md, "out": out}


def _report(out: Path, name: str, sj: dict[str, Any], runs: list[dict[str, Any]], summary: list[dict[str, Any]],
            metrics: tuple[str, ...], md: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from defectforge.report import Report

    rep = Report(f"Experiment: {name}", out, subtitle=f"data: {sj['data']}")
    rep.section("settings", "Settings").kv({k: str(v) for k, v in sj["settings"].items()}).kv(
        {k: v for k, v in sj["counts"].items()})
    ms = [m for m in metrics if any(f"{m}_mean" in r for r in summary)]
    cols = ["condition", "n_seeds"] + [c for m in ms for c in (f"{m}_mean", f"{m}_std")]
    rep.section("summary", "Mean ± std over seeds (std: ddof = 1)").table(summary, columns=cols)
    sec = rep.section("plots", "Plots")
    for m in ms:
        rows = [r for r in summary if f"{m}_mean" in r]
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 3.6))
        y = [r[f"{m}_mean"] for r in rows]
        e = [0 if not math.isfinite(r[f"{m}_std"]) else r[f"{m}_std"] for r in rows]
        ax.bar(range(len(rows)), y, yerr=e, capsize=4, color="#4a7ab5")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["condition"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(m)
        ax.set_title(f"{m} (mean ± std over seeds)")
        fig.tight_layout()
        sec.figure(fig, caption=m, name=f"plot_{m}")
        plt.close(fig)
    rep.section("runs", "Per-seed runs").table(runs)
    rep.save()
