"""Several models on the same images: overlaid ROC and PR curves and a table of image AUROC /
AP with bootstrap intervals (images resampled with replacement, a seeded generator), so a
difference can be read against its uncertainty."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def bootstrap_ci(is_defect: Any, scores: Any, metric: Callable[[np.ndarray, np.ndarray], float],
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """``(low, high)`` percentile interval of ``metric(labels, scores)`` over ``n_boot``
    resamples of the images (resamples with only one class are drawn again)."""
    y = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.all() or not y.any():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    while len(vals) < n_boot:
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        if yb.all() or not yb.any():
            continue
        vals.append(metric(yb, s[idx]))
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def comparison_rows(results: dict[str, dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per model: image AUROC and AP with their bootstrap intervals, F1 at the
    model's validation threshold."""
    from defectforge.metrics import auroc, average_precision

    rows = []
    for name, res in results.items():
        y = np.asarray(res["labels"]) != "good"
        s = np.asarray(res["scores"], dtype=np.float64)
        m = res["metrics"]
        lo_a, hi_a = bootstrap_ci(y, s, auroc, n_boot, seed=seed)
        lo_p, hi_p = bootstrap_ci(y, s, average_precision, n_boot, seed=seed)
        rows.append({"model": name, "image_auroc": m.get("image_auroc"), "image_auroc_ci95": [lo_a, hi_a],
                     "image_ap": m.get("image_ap"), "image_ap_ci95": [lo_p, hi_p],
                     "f1_at_threshold": m.get("f1_at_threshold"), "n_images": int(len(s))})
    return rows


def add_comparison_section(report: Any, results: dict[str, dict[str, Any]], n_boot: int = 1000,
                           seed: int = 0) -> Any:
    """Add the section ``compare``: overlaid image ROC and PR curves of every model and the
    table of :func:`comparison_rows`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from defectforge.metrics import pr_curve, roc_curve

    sec = report.section("compare", "Models compared on the same images")
    sec.text(f"Intervals: {n_boot} bootstrap resamples of the images (seed {seed}); overlapping intervals mean "
             "the data cannot tell the models apart.")
    rows = comparison_rows(results, n_boot, seed)
    sec.table([{"model": r["model"], "image AUROC": r["image_auroc"],
                "AUROC 95% CI": "{:.3f} - {:.3f}".format(*r["image_auroc_ci95"]), "image AP": r["image_ap"],
                "AP 95% CI": "{:.3f} - {:.3f}".format(*r["image_ap_ci95"]),
                "F1 at its threshold": r["f1_at_threshold"], "images": r["n_images"]} for r in rows])
    fig_r, ax_r = plt.subplots(figsize=(4.2, 4))
    fig_p, ax_p = plt.subplots(figsize=(4.2, 4))
    for row, (name, res) in zip(rows, results.items()):
        y = np.asarray(res["labels"]) != "good"
        s = np.asarray(res["scores"], dtype=np.float64)
        if y.any() and (~y).any():
            fpr, tpr, _ = roc_curve(y, s)
            ax_r.plot(fpr, tpr, lw=1.4, label=f"{name} ({row['image_auroc']:.3f})")
            prec, rec, _ = pr_curve(y, s)
            ax_p.step(rec, prec, where="post", lw=1.4, label=f"{name} ({row['image_ap']:.3f})")
    ax_r.plot([0, 1], [0, 1], ":", color="grey")
    ax_r.set(xlabel="FPR", ylabel="TPR", title="image ROC")
    ax_p.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title="image PR")
    for ax in (ax_r, ax_p):
        ax.legend(fontsize=7)
    sec.figures([(fig_r, "image ROC, all models"), (fig_p, "image PR, all models")])
    return sec
