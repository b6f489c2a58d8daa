"""``filter_dataset``: score a synthetic set against real defects, select, write the result.

Output folder (written atomically: a staging folder replaces ``out`` only on success):

- ``scores.csv`` — one row per synthetic sample: scores, ``kept`` and the ``reason``;
- ``kept/`` — the kept samples, in the input's format (manifest for in-memory sets);
- ``report.html`` — policy, counts, kept and rejected samples side by side;
- ``summary.json``.

Real defects come from the real set's **train** split only (never test).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectforge.data.sample import Dataset, Sample
from defectforge.errors import InputError
from defectforge.filter.select import SelectionPolicy, select


def _load(data: str | Path | Dataset, what: str) -> Dataset:
    if isinstance(data, Dataset):
        return data
    from defectforge.data import load_dataset

    return load_dataset(Path(data))


def check_synthetic(samples: Sequence[Sample], classes: Sequence[str], where: str | Path | None = None) -> list[Sample]:
    """The defect samples of a synthetic set (as train samples), after checking that each
    is labelled (mask or boxes) and that their classes are among the real ``classes``."""
    syn = [s for s in samples if s.is_defect]
    if not syn:
        raise InputError(where, "synthetic set has no defect samples (every sample is 'good' or unlabelled)")
    for s in syn:
        if s.mask_path is None and s.mask_array is None and not s.boxes:
            raise InputError(s.path or where, "synthetic sample has no labels (no mask and no boxes)")
    extra = sorted({s.label for s in syn} - set(classes))
    if extra:
        raise InputError(where, f"defect classes differ between the synthetic set {sorted({s.label for s in syn})} "
                                f"and the real set {sorted(classes)}: {extra} have no real examples")
    return [s.with_(split="train") for s in syn]


def check_sets(synth: Dataset, real: Dataset) -> tuple[list[Sample], list[Sample]]:
    """The labelled synthetic defects and the real train defects; clear errors otherwise."""
    reals = [s for s in real.filter(split="train") if s.is_defect]
    if not reals:
        raise InputError(real.root, "real set has no defect samples in its train split to compare with")
    syn = check_synthetic(list(synth), sorted({s.label for s in reals}), synth.root)
    return syn, reals


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    cols = [k for k in rows[0] if not k.startswith("_")] if rows else ["name"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in cols})
    return buf.getvalue()


def filter_dataset(synthetic: str | Path | Dataset, real: str | Path | Dataset, out: str | Path,
                   policy: SelectionPolicy | None = None, embedder: Any = None, clip: Any = None,
                   prompt: str | None = None, dreamsim: Any = None, overwrite: bool = False,
                   report_examples: int = 8, progress: Any = None, engine: Any = None) -> dict[str, Any]:
    """Score, select and write (see the module docstring); returns a summary dict with
    ``rows`` (score rows incl. ``kept``/``reason``), ``kept``, ``rejected``, ``out``.
    ``engine`` (:mod:`defectforge.engine`) scores the samples (default: this process)."""
    from defectforge.data._files import staged_dir
    from defectforge.filter.scores import diversity, score_samples

    policy = policy or SelectionPolicy()
    sds, rds = _load(synthetic, "synthetic"), _load(real, "real")
    syn, reals = check_sets(sds, rds)
    rows = score_samples(syn, reals, embedder=embedder, clip=clip, prompt=prompt, dreamsim=dreamsim, progress=progress,
                         engine=engine)
    keep, reasons = select(rows, policy)
    kept_idx = [i for i, k in enumerate(keep) if k]
    if kept_idx:
        dk = diversity(np.stack([rows[i]["_embedding"] for i in kept_idx]))
        for i, d in zip(kept_idx, dk):
            rows[i]["diversity_kept"] = float(d)
    for i, r in enumerate(rows):
        r.setdefault("diversity_kept", float("nan"))
        r["kept"], r["reason"] = keep[i], reasons[i]
    kept = [syn[i] for i in kept_idx]
    summary = {"n_scored": len(rows), "n_kept": len(kept), "n_rejected": len(rows) - len(kept),
               "policy": {"rules": [str(r) for r in policy.rules], "rank_by": policy.rank_by, "top_k": policy.top_k,
                          "quotas": policy.quotas, "min_diversity": policy.min_diversity},
               "kept_per_type": {t: sum(s.label == t for s in kept) for t in sorted({s.label for s in syn})}}
    src_root = sds.root if sds.root is not None else None
    with staged_dir(out, overwrite=overwrite, sources=(src_root, rds.root)) as tmp:
        (tmp / "scores.csv").write_text(_csv(rows))
        fmt = sds.format if sds.format in ("mvtec", "manifest", "yolo", "coco", "labelme") else "manifest"
        if kept:
            from defectforge.data import write_dataset

            mode = None
            if fmt == "yolo":
                mode = "segment" if all(s.mask_path is not None or s.mask_array is not None for s in kept) else "detect"
            write_dataset(Dataset(kept, root=sds.root, format=fmt), tmp / "kept", fmt, mode=mode)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        _report(tmp, syn, rows, summary, report_examples)
    return {**summary, "rows": rows, "kept": kept, "out": Path(out)}


def _thumb(s: Sample, height: int = 160) -> np.ndarray:
    import cv2

    from defectforge.report.visual import mask_overlay

    rgb = s.rgb()
    m = s.mask
    if m is None:
        from defectforge.filter.scores import _box_mask

        m = _box_mask(s)
    ys, xs = np.nonzero(m)
    if len(ys):  # zoom on the defect with context
        cy, cx = int(ys.mean()), int(xs.mean())
        half = max(48, int(1.5 * max(np.ptp(ys), np.ptp(xs))))
        y0, x0 = max(0, cy - half), max(0, cx - half)
        rgb, m = rgb[y0:cy + half, x0:cx + half], m[y0:cy + half, x0:cx + half]
    img = np.concatenate([rgb, mask_overlay(rgb, m)], axis=1)
    scale = height / img.shape[0]
    return cv2.resize(img, (max(1, int(img.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)


def _report(out: Path, syn: list[Sample], rows: list[dict[str, Any]], summary: dict[str, Any], n: int) -> None:
    from defectforge.report import Report

    rep = Report("Synthetic sample filtering", out)
    rep.section("summary", "Summary").kv({k: v for k, v in summary.items() if k != "policy"}).kv(summary["policy"])
    order = sorted(range(len(rows)), key=lambda i: rows[i]["realism_distance"])
    kept = [i for i in order if rows[i]["kept"]][:n]
    rej = [i for i in order if not rows[i]["kept"]][:n]

    def cap(i: int) -> str:
        r = rows[i]
        f = r["fidelity"]
        return (f"{r['name']} ({r['label']}): realism dist {r['realism_distance']:.3f}, fidelity "
                f"{'n/a' if isinstance(f, float) and math.isnan(f) else f'{f:.1f}'}, div {r['diversity']:.3f}"
                + ("" if r["kept"] else f" — {r['reason']}"))

    sec = rep.section("side", "Kept (left) and rejected (right), by realism")
    pairs = []
    from defectforge.report.visual import side_by_side

    for a, b in zip(kept + [None] * max(0, len(rej) - len(kept)), rej + [None] * max(0, len(kept) - len(rej))):
        ims = [_thumb(syn[i]) if i is not None else None for i in (a, b)]
        ims = [im if im is not None else np.full_like(next(x for x in ims if x is not None), 255) for im in ims]
        pairs.append((side_by_side(*ims), f"KEPT {cap(a) if a is not None else '-'} | REJECTED {cap(b) if b is not None else '-'}"))
    if pairs:
        sec.gallery(pairs, max_width=960)
    else:
        sec.text("nothing to show")
    cols = ["name", "label", "realism_distance", "change_in", "change_out", "fidelity", "diversity", "kept", "reason"]
    extra = [c for c in ("clipscore", "dreamsim_distance") if rows and c in rows[0]]
    rep.section("scores", "Scores").table([{c: rows[i].get(c) for c in cols + extra} for i in order], columns=cols + extra)
    rep.save()
