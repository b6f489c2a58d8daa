"""The report of a ``train-detector`` run: loss and validation mAP per epoch, test mAP per
class, and predictions drawn on validation images (ground truth green, predictions orange).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def history_figure(history: Sequence[dict[str, Any]]) -> Any:
    """Training loss (left axis) and validation mAP@0.5 / @0.5:0.95 (right axis) per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ep = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(ep, [h.get("loss", np.nan) for h in history], "o-", color="tab:blue", label="train loss")
    ax.set(xlabel="epoch", ylabel="train loss", title="training history")
    lines, labels = ax.get_legend_handles_labels()
    if any(h.get("val_map50") is not None for h in history):
        ax2 = ax.twinx()
        for key, style in (("val_map50", "s--"), ("val_map50_95", "^:")):
            ax2.plot(ep, [np.nan if h.get(key) is None else h[key] for h in history], style, color="tab:orange",
                     label=key.replace("_", " "))
        ax2.set(ylabel="validation mAP", ylim=(0, 1))
        l2, lab2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lab2
    ax.legend(lines, labels, fontsize=8, loc="best")
    return fig


def write_training_report(out_dir: str | Path, metrics: dict[str, Any], detector: Any, val: Sequence[Any],
                          n_examples: int = 6, min_score: float = 0.3) -> Path:
    """Write ``out_dir/report.html`` for a trained box detector; returns its path.

    ``metrics`` is the run's metrics.json content (``arch``, ``history``, ``test`` ...);
    ``val`` the validation samples (the first ``n_examples`` get their predictions drawn).
    """
    from defectforge.report import Report
    from defectforge.report.visual import draw_boxes
    from defectforge.supervised.train import gt_boxes

    rep = Report(f"defectforge train-detector: {metrics.get('arch', '')}", out_dir,
                 subtitle=f"{metrics.get('n_train', '?')} train / {metrics.get('n_val', '?')} validation images")
    sec = rep.section("summary", "Summary")
    test = metrics.get("test") or {}
    sec.kv({"architecture": metrics.get("arch"), "classes": ", ".join(map(str, metrics.get("classes", []))),
            "train images": metrics.get("n_train"), "validation images": metrics.get("n_val"),
            "epochs run": len(metrics.get("history", [])),
            "test mAP@0.5": test.get("map50", "no test split"), "test mAP@0.5:0.95": test.get("map50_95", ""),
            **{f"test mAP {size} boxes (COCO)": "none of this size" if test.get(f"map_{size}") is None
               else test[f"map_{size}"] for size in ("small", "medium", "large") if test},
            "test images": test.get("n_images", 0), "test boxes": test.get("n_gt_boxes", 0)})
    if metrics.get("history"):
        sec.figures([(history_figure(metrics["history"]), "loss and validation mAP per epoch")])
    per_class = test.get("per_class") or {}
    if per_class:
        rows = [{"class": c, **{k: v for k, v in (d.items() if isinstance(d, dict) else [("AP", d)])}}
                for c, d in per_class.items()]
        sec.table(rows, caption="test AP per class")
    shown = list(val)[:n_examples]
    ex = rep.section("val_predictions", "Predictions on validation images")
    if shown:
        preds = detector.predict(shown)
        preds = getattr(preds, "boxes", preds)  # a Prediction (boxes per image) or a plain list
        ex.text(f"Ground truth green, predictions orange with their scores (score >= {min_score}); the "
                f"first {len(shown)} validation images (never test images).")
        ex.gallery([(draw_boxes(s.rgb(), gt_boxes(s), p, min_score),
                     f"{s.name} ({s.label}): {len(gt_boxes(s))} true, "
                     f"{sum(1 for b in p if b.score is None or b.score >= min_score)} predicted")
                    for s, p in zip(shown, preds)], max_width=560)
    else:
        ex.text("No validation images in this run (--val-fraction 0).")
    return rep.save()
