"""Evaluate a fitted detector on a labelled split and put the result in an HTML report.

``evaluate_detector(model, dataset)`` predicts chunk by chunk (so maps at full resolution
never pile up), computes :func:`defectforge.metrics.evaluate_anomaly` on the raw scores
and on maps resized to one stated evaluation size (default: the model input size), and
keeps what a report needs: ROC and PRO curves, scores per class and overlays of the best
and worst cases. ``add_eval_section(report, name, result)`` renders that.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from defectforge.errors import InputError

#: keys of the metrics JSON written by ``defectforge detect eval``
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max", "n_images")


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    import cv2

    if a.shape[:2] == tuple(size):
        return a
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(a, (size[1], size[0]), interpolation=interp)


def evaluate_detector(model: Any, dataset: Any, split: str | None = "test", eval_size: tuple[int, int] | None = None,
                      chunk: int = 16, n_examples: int = 3) -> dict[str, Any]:
    """Metrics and report material for ``model`` on ``dataset`` (a ``Dataset`` or a list
    of ``Sample`` s; filtered to ``split`` when it is a ``Dataset`` and ``split`` is set).

    Returns a dict with ``metrics`` (``image_auroc``, ``pixel_auroc``, ``aupro``,
    ``image_ap``, ``pixel_ap``, ``f1_max``, ``n_images`` and the rest of
    :func:`~defectforge.metrics.evaluate_anomaly`), ``names``, ``labels`` (label strings),
    ``scores``, ``threshold``, ``eval_size``, ``roc`` / ``pro`` curves, ``examples``
    (overlay images with captions) and ``seconds_predict``. Pixel metrics use maps and masks
    resized to ``eval_size`` (default the model input size; masks by nearest neighbour).
    """
    from defectforge.data.sample import Dataset
    from defectforge.metrics import evaluate_anomaly, pro_curve, roc_curve
    from defectforge.report.threshold import decision_summary, model_thresholds

    if isinstance(dataset, Dataset):
        samples = list(dataset.filter(split=split)) if split else list(dataset)
    else:
        samples = list(dataset)
    if not samples:
        raise InputError(getattr(dataset, "root", None), f"no samples to evaluate (split {split!r})")
    size = tuple(eval_size) if eval_size else tuple(getattr(model, "input_size", None) or samples[0].image.shape[:2])
    scores, maps, masks = [], [], []
    t0 = time.perf_counter()
    t_pred = 0.0
    for s in range(0, len(samples), chunk):
        part = samples[s:s + chunk]
        t = time.perf_counter()
        pred = model.predict(part)
        t_pred += time.perf_counter() - t
        scores.append(pred.pred_score)
        for smp, m in zip(part, pred.anomaly_map or [None] * len(part)):
            if m is not None:
                maps.append(_resize(m.astype(np.float32), size))
            gt = smp.mask
            masks.append(None if gt is None else _resize(gt.astype(np.uint8), size, nearest=True) > 0)
    scores_a = np.concatenate(scores)
    labels = [s.label for s in samples]
    is_def = np.array([s.is_defect for s in samples])
    has_maps = len(maps) == len(samples)
    thr, pthr = model_thresholds(model)
    metrics = evaluate_anomaly(is_def, scores_a, masks if has_maps else None, maps if has_maps else None,
                               threshold=thr, pixel_threshold=pthr if has_maps else None,
                               nan_on_undefined=True)
    result: dict[str, Any] = {
        "metrics": metrics, "names": [s.name for s in samples], "labels": labels, "scores": scores_a,
        "threshold": thr, "eval_size": list(size),
        "seconds_predict": t_pred, "seconds_total": time.perf_counter() - t0,
        "ms_per_image": 1000.0 * t_pred / len(samples),
    }
    result.update(decision_summary(labels, is_def, scores_a, result["threshold"], masks if has_maps else None,
                                   maps if has_maps else None, pthr))
    if is_def.any() and (~is_def).any():
        fpr, tpr, _ = roc_curve(is_def, scores_a)
        result["roc"] = {"fpr": fpr, "tpr": tpr}
    if has_maps and any(m is not None and m.any() for m in masks):
        fpr, pro = pro_curve(masks, maps)
        keep = fpr <= 0.3 + 1e-12
        if len(fpr) > 2000:  # thin the curve for plotting
            idx = np.unique(np.r_[np.linspace(0, keep.sum() - 1, 2000).astype(int)])
            result["pro"] = {"fpr": fpr[keep][idx], "pro": pro[keep][idx]}
        else:
            result["pro"] = {"fpr": fpr[keep], "pro": pro[keep]}
    if has_maps:
        result["examples"] = _examples(samples, scores_a, is_def, maps, masks, size, n_examples,
                                       result["pixel_threshold"])
    return result


def _examples(samples, scores, is_def, maps, masks, size, n, pixel_threshold=None) -> list[tuple[np.ndarray, str]]:
    """Panels (image | ground truth | map | predicted mask, one colour scale for all, see
    :mod:`defectforge.report.panels`): best-scored defects, worst (lowest-scored) defects,
    worst (highest) goods."""
    from defectforge.report.panels import map_scale, panel

    scale = map_scale(pixel_threshold, maps)
    d_idx = np.flatnonzero(is_def)
    g_idx = np.flatnonzero(~is_def)
    picks: list[tuple[int, str]] = []
    order_d = d_idx[np.argsort(-scores[d_idx], kind="stable")]
    picks += [(int(i), "best defect") for i in order_d[:n]]
    picks += [(int(i), "worst defect") for i in order_d[::-1][:n] if int(i) not in {p for p, _ in picks}]
    order_g = g_idx[np.argsort(-scores[g_idx], kind="stable")]
    picks += [(int(i), "worst good") for i in order_g[:n]]
    out = []
    for i, kind in picks:
        img = _resize(samples[i].rgb(), size)
        out.append((panel(img, maps[i], scale, gt=masks[i]),
                    f"{kind}: {samples[i].name} ({samples[i].label}) score {scores[i]:.4g}"))
    return out


def metrics_json(result: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready metrics: the ``METRIC_KEYS`` first, then the rest of the metrics, the
    validation thresholds with their confusion counts (image and pixel) and the per-image
    scores (``name``, ``label``, ``score``, ``pred_defect``)."""
    m = result["metrics"]
    out = {k: m.get(k) for k in METRIC_KEYS}
    out.update({k: v for k, v in m.items() if k not in out})
    out["eval_size"] = result["eval_size"]
    out["ms_per_image"] = round(float(result["ms_per_image"]), 3)
    out.update(decision_json(result))
    if extra:
        out.update(extra)
    return out


def decision_json(result: dict[str, Any]) -> dict[str, Any]:
    """Thresholds, confusion counts, per-type rows and per-image scores of a result."""
    thr = result.get("threshold")
    thr = None if thr is None or not np.isfinite(thr) else float(thr)
    out: dict[str, Any] = {"threshold": thr, "threshold_source": "validation split at fit time",
                           "pixel_threshold": result.get("pixel_threshold")}
    out["confusion"] = result.get("confusion")
    if "pixel_confusion" in result:
        out["pixel_confusion"] = result["pixel_confusion"]
    out["per_type"] = result.get("per_type")
    scores = np.asarray(result["scores"], dtype=np.float64)
    out["per_image"] = [{"name": n, "label": lab, "score": float(sc),
                         "pred_defect": None if thr is None else bool(sc >= thr)}
                        for n, lab, sc in zip(result["names"], result["labels"], scores)]
    return out


def add_eval_section(report: Any, name: str, result: dict[str, Any], title: str | None = None) -> Any:
    """Add (or replace) the section ``eval_<name>`` of a :class:`~defectforge.report.Report`:
    metrics table, confusion matrices at the validation thresholds, PR curve and P/R/F1
    against the threshold, a threshold slider, per-type table, ROC / PRO curves, score
    histograms and per-image panels on one colour scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from defectforge.report.threshold import confusion_figure, slider_html, sweep_figures

    sec = report.section(f"eval_{name}", title or f"Evaluation: {name}")
    m = result["metrics"]
    thr = result.get("threshold")
    sec.text(f"{m['n_images']} images ({m['n_defect']} defect, {m['n_good']} good). Scores are raw; pixel "
             f"metrics at {result['eval_size'][0]}x{result['eval_size'][1]} (HxW); AUPRO integrated to FPR "
             f"{m['aupro_fpr_limit']}. F1-max is an oracle on this data; F1 at the validation threshold is not. "
             "Thresholds were chosen on the validation split when the model was fitted, never on this data.")
    sec.kv({k: m.get(k) for k in (*METRIC_KEYS[:-1], "f1_at_threshold", "pixel_f1_at_threshold")}
           | {"threshold (validation)": thr, "pixel threshold (validation)": result.get("pixel_threshold"),
              "predict ms/image": result.get("ms_per_image")})
    figs = []
    conf = result.get("confusion") or {}
    if conf.get("tp") is not None:
        figs.append((confusion_figure(conf, "image confusion"), "image confusion matrix (validation threshold)"))
    pconf = result.get("pixel_confusion") or {}
    if pconf.get("tp") is not None:
        figs.append((confusion_figure(pconf, "pixel confusion", unit="pixels"),
                     "pixel confusion matrix (validation pixel threshold)"))
    figs += sweep_figures(result.get("sweep") or {}, thr, m.get("image_ap"))
    if "roc" in result:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(result["roc"]["fpr"], result["roc"]["tpr"], lw=1.5)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="FPR", ylabel="TPR", title=f"image ROC (AUROC {m['image_auroc']:.3f})")
        figs.append((fig, "image ROC"))
    if "pro" in result:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(result["pro"]["fpr"], result["pro"]["pro"], lw=1.5)
        ax.set(xlabel="FPR", ylabel="PRO", xlim=(0, 0.3), ylim=(0, 1),
               title=f"PRO curve (AUPRO@0.3 {m['aupro']:.3f})")
        figs.append((fig, "PRO curve"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    labels = np.asarray(result["labels"])
    sc = np.asarray(result["scores"], dtype=np.float64)
    bins = np.histogram_bin_edges(sc, bins=30)
    for lab in sorted(set(labels.tolist()), key=lambda x: x != "good"):
        ax.hist(sc[labels == lab], bins=bins, alpha=0.55, label=f"{lab} ({int((labels == lab).sum())})")
    if thr is not None and np.isfinite(thr):
        ax.axvline(thr, color="k", ls="--", lw=1, label="threshold (val)")
    ax.set(xlabel="image score", ylabel="images", title="scores per class")
    ax.legend(fontsize=8)
    figs.append((fig, "score histogram"))
    sec.figures(figs)
    if result.get("per_type"):
        sec.table([{k: "" if v is None else v for k, v in r.items()} for r in result["per_type"]], caption="per defect type (flagged = score >= validation threshold)")
    sec.html(slider_html(labels != "good", sc, thr, name))
    if result.get("examples"):
        sec.text("Panels: image | ground truth (red) | anomaly map on one colour scale for all panels (the "
                 "validation pixel threshold at the marked colour) | predicted mask (cyan, ground truth outlined).")
        sec.gallery(result["examples"], max_width=1000)
    return sec
