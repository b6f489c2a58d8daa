"""What a decision threshold does: confusion counts, precision / recall / F1 against the
threshold, a per-defect-type table, and the plots of them.

Everything takes raw scores and a threshold chosen elsewhere (on validation data, at fit
time); nothing here picks a threshold. ``score >= threshold`` means "defect", as in
:func:`defectforge.metrics.f1_at`. The curves come from :func:`defectforge.metrics.pr_curve`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from defectforge.data.sample import GOOD


def model_thresholds(model: Any) -> tuple[float | None, float | None]:
    """``(image threshold, pixel threshold)`` stored in a fitted model (``threshold_`` /
    ``pixel_threshold_``, or the older attribute names without ``_``); ``None`` when absent."""

    def get(name: str) -> float | None:
        v = getattr(model, name + "_", None)
        if v is None:
            v = getattr(model, name, None)
        return None if v is None else float(v)

    return get("threshold"), get("pixel_threshold")


def _rates(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": prec, "recall": rec, "f1": f1}


def confusion_counts(is_defect: Any, scores: Any, threshold: float | None) -> dict[str, Any]:
    """``{"threshold", "tp", "fp", "tn", "fn", "precision", "recall", "f1"}`` of
    ``score >= threshold`` against ``is_defect``; counts are ``None`` without a threshold."""
    y = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if threshold is None or not np.isfinite(threshold):
        return {"threshold": None, "tp": None, "fp": None, "tn": None, "fn": None,
                "precision": None, "recall": None, "f1": None}
    pred = s >= float(threshold)
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(np.count_nonzero(~pred & ~y))
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn, **_rates(tp, fp, fn)}


def pixel_confusion(masks: Sequence[np.ndarray | None], maps: Sequence[np.ndarray],
                    threshold: float | None) -> dict[str, Any]:
    """Pixel confusion counts of ``map >= threshold`` pooled over all images (an image
    without a mask counts as all background)."""
    if threshold is None or not np.isfinite(threshold):
        return confusion_counts([], [], None)
    tp = fp = fn = tn = 0
    for m, a in zip(masks, maps):
        pred = np.asarray(a) >= float(threshold)
        gt = np.zeros(pred.shape, bool) if m is None else np.asarray(m, dtype=bool)
        t = int(np.count_nonzero(pred & gt))
        p = int(np.count_nonzero(pred))
        g = int(np.count_nonzero(gt))
        tp, fp, fn = tp + t, fp + p - t, fn + g - t
        tn += pred.size - p - g + t
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn, **_rates(tp, fp, fn)}


def threshold_sweep(is_defect: Any, scores: Any) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at every distinct score used as the threshold (increasing),
    plus the PR curve's end point. ``{}`` when there are no defect images."""
    from defectforge.metrics import pr_curve

    y = np.asarray(is_defect, dtype=bool)
    if not y.any():
        return {}
    prec, rec, thr = pr_curve(y, scores)
    p, r = prec[:-1], rec[:-1]  # drop the (1, 0) end point that has no threshold
    f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    return {"threshold": thr, "precision": p, "recall": r, "f1": f1,
            "pr_precision": prec, "pr_recall": rec}


def per_type_rows(labels: Sequence[str], scores: Any, threshold: float | None) -> list[dict[str, Any]]:
    """One row per label: images, mean / median score, AUROC against the good images and
    the share flagged at ``threshold`` (recall for a defect type, false-alarm rate for good)."""
    from defectforge.metrics import auroc

    labs = np.asarray(list(labels), dtype=object)
    s = np.asarray(scores, dtype=np.float64)
    good = labs == GOOD
    rows = []
    for lab in sorted(set(labs.tolist()), key=lambda x: (x != GOOD, x)):
        sel = labs == lab
        row: dict[str, Any] = {"type": lab, "images": int(sel.sum()), "mean score": float(s[sel].mean()),
                               "median score": float(np.median(s[sel]))}
        if lab != GOOD:
            row["AUROC vs good"] = (auroc(np.r_[np.ones(sel.sum(), bool), np.zeros(good.sum(), bool)],
                                          np.r_[s[sel], s[good]]) if good.any() else float("nan"))
        else:
            row["AUROC vs good"] = None
        if threshold is not None and np.isfinite(threshold):
            flagged = int(np.count_nonzero(s[sel] >= threshold))
            row["flagged"] = flagged
            row["flagged share"] = flagged / int(sel.sum())
            row["meaning"] = "false alarms" if lab == GOOD else "recall"
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(counts: dict[str, Any], title: str, unit: str = "images") -> Any:
    """A 2 x 2 confusion matrix (rows: truth, columns: prediction) with counts and shares."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    grid = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]], dtype=np.float64)
    rows = grid.sum(axis=1, keepdims=True)
    share = np.divide(grid, rows, out=np.zeros_like(grid), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [["TN", "FP"], ["FN", "TP"]]
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{names[i][j]}\n{int(grid[i, j]):,}\n{share[i, j]:.1%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks([0, 1], ["pred good", "pred defect"])
    ax.set_yticks([0, 1], ["good", "defect"])
    ax.set_title(f"{title}\nthreshold {counts['threshold']:.4g} ({unit})", fontsize=9)
    return fig


def sweep_figures(sweep: dict[str, np.ndarray], threshold: float | None, ap: float | None = None) -> list[tuple[Any, str]]:
    """``[(PR curve, caption), (P/R/F1 vs threshold, caption)]`` with the threshold marked."""
    if not sweep:
        return []
    plt = _plt()
    out = []
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.step(sweep["pr_recall"], sweep["pr_precision"], where="post", lw=1.5)
    has_thr = threshold is not None and np.isfinite(threshold)
    if has_thr:
        i = int(np.searchsorted(sweep["threshold"], threshold, side="left"))
        if i < len(sweep["threshold"]):
            ax.plot(sweep["recall"][i], sweep["precision"][i], "o", color="k", label="validation threshold")
            ax.legend(fontsize=8, loc="lower left")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title="image PR curve" + (f" (AP {ap:.3f})" if ap is not None and np.isfinite(ap) else ""))
    out.append((fig, "image PR curve"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    t = sweep["threshold"]
    for key, style in (("precision", "-"), ("recall", "--"), ("f1", "-.")):
        ax.step(t, sweep[key], style, where="post", lw=1.3, label=key)
    if has_thr:
        ax.axvline(threshold, color="k", lw=1, ls=":", label=f"validation threshold {threshold:.4g}")
    ax.set(xlabel="image score threshold (score >= threshold: defect)", ylabel="value", ylim=(0, 1.02),
           title="precision / recall / F1 against the threshold")
    ax.legend(fontsize=8)
    out.append((fig, "precision, recall and F1 against the threshold"))
    return out


def decision_summary(labels: Sequence[str], is_defect: Any, scores: Any, threshold: float | None,
                     masks: Sequence[np.ndarray | None] | None = None, maps: Sequence[np.ndarray] | None = None,
                     pixel_threshold: float | None = None) -> dict[str, Any]:
    """What the stored (validation) thresholds do on this data: image and pixel confusion
    counts, the precision/recall/F1 sweep and the per-type rows."""
    out: dict[str, Any] = {
        "confusion": confusion_counts(is_defect, scores, threshold),
        "sweep": threshold_sweep(is_defect, scores),
        "per_type": per_type_rows(labels, scores, threshold),
        "pixel_threshold": None if pixel_threshold is None or not np.isfinite(pixel_threshold)
        else float(pixel_threshold),
    }
    if maps is not None and masks is not None:
        out["pixel_confusion"] = pixel_confusion(masks, maps, pixel_threshold)
    return out


def slider_html(is_defect: Any, scores: Any, threshold: float | None, key: str) -> str:
    """A threshold slider over the stored image scores: moving it recomputes the confusion
    counts, precision and recall in the page (no server); it starts at ``threshold``."""
    import json

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_defect, dtype=bool)
    fin = s[np.isfinite(s)]
    if fin.size == 0:
        return ""
    lo, hi = float(fin.min()), float(fin.max())
    start = float(threshold) if threshold is not None and np.isfinite(threshold) else (lo + hi) / 2
    start = min(max(start, lo), hi)
    uid = "thr_" + "".join(c if c.isalnum() else "_" for c in key)
    data = json.dumps({"s": [round(float(v), 8) for v in s], "y": [int(v) for v in y]})
    return f"""
<div class="slider" id="{uid}">
<p><b>Try a threshold</b> (image score &ge; threshold = defect; the validation threshold is
{'n/a' if threshold is None else f'{threshold:.6g}'}; moving the slider changes nothing stored):</p>
<input type="range" min="{lo!r}" max="{hi!r}" step="any" value="{start!r}" style="width:420px">
<output></output>
</div>
<script>
(function() {{
  const d = {data};
  const root = document.getElementById("{uid}");
  const inp = root.querySelector("input"), out = root.querySelector("output");
  function upd() {{
    const t = parseFloat(inp.value); let tp = 0, fp = 0, tn = 0, fn = 0;
    for (let i = 0; i < d.s.length; i++) {{
      const p = d.s[i] >= t;
      if (d.y[i]) {{ if (p) tp++; else fn++; }} else {{ if (p) fp++; else tn++; }}
    }}
    const pr = tp + fp ? (tp / (tp + fp)).toFixed(3) : "n/a", rc = tp + fn ? (tp / (tp + fn)).toFixed(3) : "n/a";
    out.textContent = " threshold " + t.toPrecision(5) + ": TP " + tp + "  FP " + fp + "  TN " + tn +
      "  FN " + fn + "  precision " + pr + "  recall " + rc;
  }}
  inp.addEventListener("input", upd); upd();
}})();
</script>"""
