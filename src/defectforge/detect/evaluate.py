"""Evaluate a fitted detector on a labelled split and put the result in an HTML report.

``evaluate_detector(model, dataset)`` predicts chunk by chunk (so maps at full resolution
never pile up; above a pixel budget the maps at evaluation size do not either: they go into
bounded-memory histograms, :mod:`defectforge.metrics.streaming`), computes :func:`defectforge.metrics.evaluate_anomaly` on the raw scores
and on maps resized to one stated evaluation size (default: the model input size), and
keeps what a report needs: ROC and PRO curves, scores per class and overlays of the best
and worst cases. ``add_eval_section(report, name, result)`` renders that.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from defectforge.detect.predict_job import DetectorTask
from defectforge.errors import InputError

#: keys of the metrics JSON written by ``defectforge detect eval``
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max", "n_images")


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    import cv2

    if a.shape[:2] == tuple(size):
        return a
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(a, (size[1], size[0]), interpolation=interp)


def _where(dataset: Any) -> Any:
    """The file to name for a dataset-wide problem: its manifest CSV, else its folder."""
    root = getattr(dataset, "root", None)
    if root is not None and getattr(dataset, "format", None) == "manifest":
        from defectforge.data.manifest import find_manifest

        return find_manifest(root) or root
    return root


def validate_eval_samples(dataset: Any, split: str | None = "test", pixel_metrics: bool = True) -> list[Any]:
    """The samples to evaluate, after refusing labels that would silently skew the metrics.

    Raises :class:`InputError` naming the file for: an empty split (listing the splits there
    are); images whose split differs from ``split`` only in case or spaces (``Test``), which
    would be left out; an image listed twice; a mask whose size differs from its image's
    (never resized to fit); a defect image with an empty mask; and, when ``pixel_metrics``,
    defect images without a mask (pixel AUROC and AUPRO would be ``nan`` or biased). Reads
    image headers and masks only; prediction is untouched, so a streaming evaluator can run
    this first.
    """
    from defectforge.data._files import image_size
    from defectforge.data.sample import Dataset

    everything = list(dataset)
    samples = [s for s in everything if s.split == split] if (split and isinstance(dataset, Dataset)) else everything
    where = _where(dataset)
    if not samples:
        have = sorted({s.split for s in everything})
        raise InputError(where, f"no images in split {split!r} to evaluate (splits are: {', '.join(have) or 'none'})")
    if split and isinstance(dataset, Dataset):
        near = [s for s in everything if s.split != split and s.split.strip().lower() == split.strip().lower()]
        if near:
            raise InputError(where, f"{len(near)} image(s) have split {near[0].split!r}, not {split!r} (split names "
                                    f"are case-sensitive; e.g. {near[0].path or near[0].name}); fix the split names "
                                    "so no image is silently left out")
    seen: set[Any] = set()
    for s in samples:
        key = s.path.resolve() if s.path is not None else id(s)
        if key in seen:
            raise InputError(s.path, f"listed twice in split {split!r} (it would count twice in every metric)")
        seen.add(key)
    defects = [s for s in samples if s.is_defect]
    has_mask = [s.mask_path is not None or s.mask_array is not None for s in samples]
    if pixel_metrics and defects:
        if not any(h for s, h in zip(samples, has_mask) if s.is_defect):
            raise InputError(where, f"no defect image in split {split!r} has a mask, so pixel AUROC and AUPRO are "
                                    "undefined; pass --image-only (pixel_metrics=False) for image metrics only")
        for s, h in zip(samples, has_mask):
            if s.is_defect and not h:
                raise InputError(s.path, f"defect image ({s.label}) has no mask while others have one; pixel "
                                         "metrics would count it as all background (pass --image-only to skip them)")
    if pixel_metrics:
        for s, h in zip(samples, has_mask):
            if not h:
                continue
            m = s.mask
            hw = image_size(s)
            if tuple(m.shape[:2]) != tuple(hw):
                raise InputError(s.mask_path or s.path, f"mask is {m.shape[1]}x{m.shape[0]} (WxH) but the image is "
                                                        f"{hw[1]}x{hw[0]}; masks are never resized to fit")
            if s.is_defect and not m.any():
                raise InputError(s.mask_path or s.path, f"defect image ({s.label}) has an empty mask")
    return samples


def model_input_size(model: Any) -> tuple[int, int] | None:
    """The (H, W) a fitted detector resizes images to (``input_size_``), if it has one."""
    size = getattr(model, "input_size_", None) or getattr(model, "input_size", None)
    return tuple(int(v) for v in size) if size is not None else None


def evaluate_detector(model: Any, dataset: Any, split: str | None = "test", eval_size: tuple[int, int] | None = None,
                      chunk: int = 16, n_examples: int = 3, pixel_metrics: bool = True, engine: Any = None,
                      model_path: str | None = None, progress: Any = None, pixel_path: str = "auto",
                      pixel_budget: int | None = None) -> dict[str, Any]:
    """Metrics and report material for ``model`` on ``dataset`` (a ``Dataset`` or a list
    of ``Sample`` s; filtered to ``split`` when it is a ``Dataset`` and ``split`` is set).

    Returns a dict with ``metrics`` (``image_auroc``, ``pixel_auroc``, ``aupro``,
    ``image_ap``, ``pixel_ap``, ``f1_max``, ``n_images`` and the rest of
    :func:`~defectforge.metrics.evaluate_anomaly`), ``names``, ``labels`` (label strings),
    ``scores``, ``threshold``, ``eval_size``, ``roc`` / ``pro`` curves, ``examples``
    (overlay images with captions) and ``seconds_predict``. Pixel metrics use maps and masks
    resized to ``eval_size`` (default the model input size; masks by nearest neighbour).
    The labels are checked first (:func:`validate_eval_samples`); ``pixel_metrics=False``
    evaluates image scores only (pixel metrics are then reported as not computed).

    ``pixel_path``: ``"exact"`` pools every map in memory (one global sort, ~45 bytes per
    pixel at the peak); ``"binned"`` folds each chunk of maps into fixed-grid histograms
    (:class:`~defectforge.metrics.streaming.PixelAccumulator`) and drops it, so memory does
    not grow with the number of images, and states a proven maximum error per metric;
    ``"auto"`` (default) is exact up to ``pixel_budget`` pixels (images x eval size, default
    :data:`~defectforge.metrics.streaming.DEFAULT_PIXEL_BUDGET`) and binned above. The
    metrics record ``pixel_metrics_path`` and ``pixel_metrics_max_error``. Either way only the
    maps of the example panels are kept beyond their chunk on the binned path.

    ``engine`` (:mod:`defectforge.engine`) scores the chunks (default: this process with
    ``model``); workers of another process load ``model_path`` and read images by path.
    ``progress("eval", done, total)`` (:mod:`defectforge.progress`) is called as images are scored.
    """
    from defectforge.detect.eval_sinks import ExactSink, StreamSink, pick_examples
    from defectforge.metrics.streaming import DEFAULT_PIXEL_BUDGET, choose_pixel_path
    from defectforge.report.threshold import decision_summary, model_thresholds

    samples = validate_eval_samples(dataset, split, pixel_metrics)
    size = tuple(eval_size) if eval_size else tuple(model_input_size(model) or samples[0].image.shape[:2])
    n_pixels = len(samples) * int(size[0]) * int(size[1])
    path = choose_pixel_path(pixel_path, n_pixels, DEFAULT_PIXEL_BUDGET if pixel_budget is None else pixel_budget)
    thr, pthr = model_thresholds(model)
    is_def = np.array([s.is_defect for s in samples])
    labels = [s.label for s in samples]
    t0 = time.perf_counter()
    sink = (ExactSink(len(samples)) if path == "exact" and pixel_metrics
            else StreamSink(is_def, n_examples, pthr, pixel_metrics))
    t_pred = _score_chunks(model, samples, size, chunk, engine, model_path, progress, pixel_metrics, sink)
    scores_a = sink.scores
    metrics, pix, extra = sink.finish(is_def, scores_a, thr, pthr)
    metrics["pixel_metrics_path"] = path if pixel_metrics else "not computed"
    metrics["n_pixels"] = n_pixels
    result: dict[str, Any] = {"pixel_metrics": pixel_metrics,
        "metrics": metrics, "names": [s.name for s in samples], "labels": labels, "scores": scores_a,
        "threshold": thr, "eval_size": list(size),
        "seconds_predict": t_pred, "seconds_total": time.perf_counter() - t0,
        "ms_per_image": 1000.0 * t_pred / len(samples),
    }
    masks, maps = pix
    result.update(decision_summary(labels, is_def, scores_a, result["threshold"], masks, maps, pthr))
    result.update(extra)  # the binned path's exact pixel confusion counts
    if is_def.any() and (~is_def).any():
        from defectforge.metrics import roc_curve

        fpr, tpr, _ = roc_curve(is_def, scores_a)
        result["roc"] = {"fpr": fpr, "tpr": tpr}
    curve = sink.pro_curve()
    if curve is not None:
        fpr, pro = curve
        keep = fpr <= 0.3 + 1e-12
        if len(fpr) > 2000:  # thin the curve for plotting
            idx = np.unique(np.r_[np.linspace(0, keep.sum() - 1, 2000).astype(int)])
            result["pro"] = {"fpr": fpr[keep][idx], "pro": pro[keep][idx]}
        else:
            result["pro"] = {"fpr": fpr[keep], "pro": pro[keep]}
    if sink.has_maps:
        result["examples"] = _examples(samples, scores_a, pick_examples(scores_a, is_def, n_examples),
                                       sink.maps, sink.masks, size, sink.scale(result["pixel_threshold"]))
    return result


class ScoreTask(DetectorTask):
    """Predict one chunk of samples (read by path in the worker); returns the image scores,
    the maps and ground-truth masks at ``size`` and the seconds spent in ``predict``."""

    def __init__(self, model_path: str | None, size: tuple[int, int], model: Any = None, pixel_metrics: bool = True):
        super().__init__(model_path, model)
        self.size = tuple(size)
        self.pixel_metrics = pixel_metrics

    def __call__(self, item: tuple[int, list[Any]]) -> tuple[np.ndarray, list[np.ndarray] | None,
                                                             list[np.ndarray | None], float]:
        part = item[1]  # (start index, samples): the driver puts results back in order by start
        t = time.perf_counter()
        pred = self.model.predict(part)
        dt = time.perf_counter() - t
        maps = None if pred.anomaly_map is None else [_resize(m.astype(np.float32), self.size) for m in pred.anomaly_map]
        masks = []
        for smp in part:
            gt = smp.mask if self.pixel_metrics else None
            masks.append(None if gt is None else _resize(gt.astype(np.uint8), self.size, nearest=True) > 0)
        return np.asarray(pred.pred_score), maps, masks, dt


def _score_chunks(model: Any, samples: list[Any], size: tuple[int, int], chunk: int, engine: Any,
                  model_path: str | None, progress: Any, pixel_metrics: bool, sink: Any) -> float:
    """Score ``samples`` chunk by chunk on ``engine``, handing each chunk's scores, maps and
    masks to ``sink.add(start, ...)`` as it arrives; returns the seconds spent in predict."""
    from defectforge.engine.local import LocalEngine

    if engine is not None and engine.name != "local" and model_path is None:
        from defectforge.errors import ConfigError

        raise ConfigError(f"the {engine.name} engine loads the model in its workers: pass model_path")
    runner = engine if engine is not None else LocalEngine(1)
    items = [(s, samples[s:s + chunk]) for s in range(0, len(samples), chunk)]
    done, t_pred = 0, 0.0
    for (start, part), (sc, mp, mk, dt) in runner.map(ScoreTask(model_path, size, model, pixel_metrics), items):
        sink.add(start, np.asarray(sc, dtype=np.float64), mp, mk)
        t_pred += dt
        done += len(part)
        if progress:
            progress("eval", done, len(samples))
    return t_pred


def _examples(samples, scores, picks, maps, masks, size, scale) -> list[tuple[np.ndarray, str]]:
    """Panels (image | ground truth | map | predicted mask, on the one colour ``scale``, see
    :mod:`defectforge.report.panels`) of the ``picks`` (index, kind)."""
    from defectforge.report.panels import panel

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
    if not result.get("pixel_metrics", True):
        for k, v in list(out.items()):
            if ("pixel" in k or "aupro" in k) and isinstance(v, float) and v != v:
                out[k] = None
        out["pixel_metrics"] = "not computed (--image-only)"
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


def _path_note(m: dict[str, Any]) -> str:
    """One sentence on how the pixel metrics were computed (exact, or binned with its bound)."""
    if m.get("pixel_metrics_path") != "binned":
        return ""
    err = m.get("pixel_metrics_max_error") or {}
    bounds = ", ".join(f"{k} {v:.1e}" for k, v in err.items() if v is not None)
    return (f" Pixel metrics were computed in bounded memory ({m.get('n_pixels', 0):,} pixels, "
            f"{m.get('pixel_bins')} score bins); proven maximum error against the exact values: {bounds or 'n/a'}.")


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
             "Thresholds were chosen on the validation split when the model was fitted, never on this data."
             + _path_note(m))
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
