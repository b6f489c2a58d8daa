"""Real and synthetic defects side by side at the same zoom, and their size / position
statistics against each other.

Every crop is ``crop x crop`` pixels of the image at its own resolution around the defect's
centre (padded at borders, never resized), so a synthetic pit that is twice the size of the
real ones looks twice the size here. The histograms compare defect area (fraction of the
image), box width/height (pixels) and centre position (fraction of width/height).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def defect_crop(sample: Any, crop: int = 128) -> np.ndarray | None:
    """A ``crop x crop`` RGB crop centred on the sample's mask (outlined), or ``None``."""
    from defectforge.report.visual import mask_overlay

    m = sample.mask
    if m is None or not np.any(m):
        return None
    rgb = sample.rgb()
    if m.shape != rgb.shape[:2]:
        return None
    ys, xs = np.nonzero(m)
    cy, cx = int(round(ys.mean())), int(round(xs.mean()))
    half = crop // 2
    pad = ((half, half), (half, half))
    img = np.pad(mask_overlay(rgb, m, alpha=0.0, thickness=1), (*pad, (0, 0)), constant_values=255)
    return img[cy:cy + crop, cx:cx + crop]


def defect_stats(samples: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per defect image: ``area`` (fraction), ``width`` / ``height`` of the mask's box (px),
    ``cx`` / ``cy`` (centre as a fraction of the image width / height)."""
    rows = []
    for s in samples:
        m = s.mask
        if m is None or not np.any(m):
            continue
        ys, xs = np.nonzero(m)
        h, w = m.shape
        rows.append((m.mean(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, xs.mean() / w, ys.mean() / h))
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return {k: a[:, i] for i, k in enumerate(("area", "width", "height", "cx", "cy"))}


def stats_figure(real: dict[str, np.ndarray], synth: dict[str, np.ndarray]) -> Any:
    """Histograms of the five statistics, real and synthetic overlaid (densities)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = (("area", "defect area (fraction of image)"), ("width", "box width (px)"),
            ("height", "box height (px)"), ("cx", "centre x (fraction)"), ("cy", "centre y (fraction)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.6))
    for ax, (k, title) in zip(axes, keys):
        both = np.r_[real[k], synth[k]]
        if both.size == 0:
            continue
        bins = np.histogram_bin_edges(both, bins=15)
        for data, lab, col in ((real[k], f"real ({len(real[k])})", "tab:blue"),
                               (synth[k], f"synthetic ({len(synth[k])})", "tab:orange")):
            if data.size:
                ax.hist(data, bins=bins, alpha=0.55, density=True, label=lab, color=col)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def add_real_vs_synthetic(report: Any, real: Sequence[Any], synth: Sequence[Any], n: int = 8, crop: int = 128,
                          key: str = "real_vs_synthetic", max_stats: int = 500) -> Any:
    """Add a section: ``n`` real and ``n`` synthetic crops at the same zoom and the
    statistics figure (over the first ``max_stats`` of each). Returns the section
    (``None`` when there is nothing to compare)."""
    real, synth = list(real), list(synth)
    real_c = [(c, s) for s in real if (c := defect_crop(s, crop)) is not None][:n]
    syn_c = [(c, s) for s in synth if (c := defect_crop(s, crop)) is not None][:n]
    if not real_c or not syn_c:
        return None
    sec = report.section(key, "Real vs synthetic defects (same zoom)")
    sec.text(f"Each crop is {crop} x {crop} pixels of the image at its own resolution around the defect "
             "(no resizing), so sizes compare directly. Outline: the label.")
    sec.gallery([(c, f"real: {s.name}") for c, s in real_c], max_width=crop)
    sec.gallery([(c, f"synthetic: {s.name}") for c, s in syn_c], max_width=crop)
    sec.figures([(stats_figure(defect_stats(real[:max_stats]), defect_stats(synth[:max_stats])),
                  "size and position: real (blue) vs synthetic (orange)")])
    return sec


def add_realism(report: Any, realism: dict[str, Any], key: str = "realism") -> Any:
    """Add the realism numbers of :func:`defectforge.filter.c2st.set_realism`: the C2ST
    rows (overall, per generator, each feature group alone, host-only test, real-vs-real
    floor) as a table, KID / PRDC beside them."""
    sec = report.section(key, "Realism: can a classifier tell synthetic from real defects?")
    sec.text(f"Classifier two-sample test (C2ST): {realism.get('c2st_method', '')}. Read the AUC against the "
             "real-vs-real floor (the same test between two halves of the real defects) and against the "
             "host-only test: when the host surfaces alone are told apart, a high defect AUC may be the "
             "hosts, not the defects. KID and precision / recall / density / coverage are on the backbone "
             "features of the same crops.")
    names = {"c2st_floor": "real vs real (floor)", "c2st_host": "host-only: defect-free crops, real vs synthetic images",
             "c2st_backbone": "real vs synthetic, backbone features only",
             "c2st_appearance": "real vs synthetic, appearance statistics only"}
    rows = []
    for k, v in realism.items():
        if "_auc" not in k and "_reason" not in k:
            continue
        base, _, rest = k.partition("_auc") if "_auc" in k else k.partition("_reason")
        tag = rest if rest.startswith("[") else ""
        what = names.get(base, f"real vs synthetic {tag}".strip())
        ci = realism.get(f"{base}_ci{tag}")
        rows.append({"comparison": what, "AUC": v if "_reason" not in k else "not run",
                     "95 % interval": f"{ci[0]:.3f} - {ci[1]:.3f}" if ci else (v if "_reason" in k else "")})
    if rows:
        sec.table(rows, caption=f"crops: {realism.get('c2st_n_real')} real, {realism.get('c2st_n_synth')} synthetic; "
                                f"{realism.get('c2st_crop', '')}")
    other = {k: realism[k] for k in ("kid", "kid_std", "precision", "recall", "density", "coverage") if k in realism}
    if other:
        sec.kv(other)
    return sec
