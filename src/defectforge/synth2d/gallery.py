"""Gallery of synthetic samples for the HTML report: original, synthetic, mask overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectforge.data.sample import Sample


def gallery_items(samples: Sequence[Sample], originals: Sequence[np.ndarray | None] | None = None,
                  zoom: bool = True) -> list[tuple[np.ndarray, str]]:
    """One tile per sample: original | synthetic | overlay (zoomed around the defect when
    ``zoom``, since defects like pits cover 0.3 % of the image)."""
    from defectforge.data.image_io import as_rgb8, read_image
    from defectforge.report.visual import mask_overlay, side_by_side

    items = []
    for k, s in enumerate(samples):
        syn = s.rgb()
        m = s.mask_or_empty(syn.shape[:2])
        orig = originals[k] if originals is not None and k < len(originals) else None
        if orig is None:
            sp = s.meta.get("source_path")
            orig = as_rgb8(read_image(sp)) if sp else syn
        if zoom and m.any():
            ys, xs = np.nonzero(m)
            H, W = m.shape
            cy, cx = int(ys.mean()), int(xs.mean())
            h = min(H, max(96, int((ys.max() - ys.min()) * 2.5)))
            w = min(W, max(192, int((xs.max() - xs.min()) * 2.5), 2 * h))
            y0, x0 = int(np.clip(cy - h // 2, 0, H - h)), int(np.clip(cx - w // 2, 0, W - w))
            sl = (slice(y0, y0 + h), slice(x0, x0 + w))
            orig, syn, m = orig[sl], syn[sl], m[sl]
        cap = f"{s.label} / {s.meta.get('generator', '')} #{s.meta.get('index', k)}"
        items.append((side_by_side(orig, syn, mask_overlay(syn, m)), cap))
    return items


def add_gallery(report: Any, samples: Sequence[Sample], key: str = "synth", title: str = "Synthetic defects",
                originals: Sequence[np.ndarray | None] | None = None) -> Any:
    """Add a section with the gallery to a :class:`defectforge.report.Report`."""
    sec = report.section(key, title)
    sec.text("Each tile: original good image | synthetic defect | derived label (red), cropped around the defect.")
    sec.gallery(gallery_items(samples, originals), max_width=720)
    return sec


def write_report(out: Path, samples: Sequence[Sample], run: Any, realism: dict[str, Any] | None = None,
                 real: list[Sample] | None = None) -> Path | None:
    """``out/report.html`` with the run summary and a gallery (it carries a creation date,
    so it is the one output that is not byte-identical between runs). ``real``: the real
    defects when already loaded (:func:`real_defects`)."""
    if not samples:
        return None
    from defectforge.report import Report

    rep = Report("defectforge synth", out)
    rep.section("summary", "Run").kv({"accepted": len(run.samples), "failed": run.failed,
                                      "rejected attempts": run.n_rejected, **{f"rejected: {k}": v for k, v in run.rejected.items()}})
    add_gallery(rep, samples)
    real = real_defects(run) if real is None else real
    if real:
        from defectforge.report.realsynth import add_real_vs_synthetic

        add_real_vs_synthetic(rep, real, run.samples or samples)
    if realism:
        from defectforge.report.realsynth import add_realism

        add_realism(rep, realism)
    return rep.save()


def source_dataset(run: Any) -> Any | None:
    """The run's source dataset, or ``None`` when there is none or it cannot be read (the
    comparisons with real defects are then left out)."""
    src = getattr(getattr(run, "config", None), "source", None)
    if src is None or not Path(src.path).exists():
        return None
    from defectforge.data.formats import load_dataset
    from defectforge.errors import DefectforgeError

    try:
        return load_dataset(src.path)
    except DefectforgeError:
        return None


def real_defects(run: Any, ds: Any | None = None) -> list[Sample]:
    """The real defect images (with masks) of the run's source split, for comparison;
    ``ds``: the source dataset when already loaded (:func:`source_dataset`)."""
    ds = source_dataset(run) if ds is None else ds
    if ds is None:
        return []
    src = run.config.source
    return [s for s in ds if s.split == src.split and s.is_defect and (s.mask_path or s.mask_array is not None)]
