"""Per-sample scores of synthetic defects (weight-free by default).

- **realism_distance**: mean over a sample's defect crops of the distance (L2 on
  L2-normalised embeddings) to the nearest **real** defect crop. 0 = looks exactly like a
  real defect; lower is better.
- **fidelity** (from the source image, when known): ``change_in`` = mean absolute grey-level
  change inside the mask, ``change_out`` = the same outside it; ``fidelity = change_in -
  2 * change_out`` (grey levels). An unchanged image scores 0 everywhere. Without a source
  image, ``change_in`` is the visibility of the defect against a ring around it and
  ``change_out`` is NaN.
- **diversity**: distance of a sample's mean crop embedding to its nearest other candidate
  (recomputed among the kept samples after selection).
- optional **clipscore** (crop vs prompt) and **dreamsim_distance** (to the nearest real crop).

A crop is an instance box (from the mask, else the sample's boxes) grown by ``context``
times its size on each side (at least 16 px), clamped to the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectforge.data.sample import Box, Sample
from defectforge.errors import InputError


def _boxes(sample: Sample) -> list[Box]:
    return sample.derived_boxes()


def crop_box(shape: tuple[int, int], box: Box, context: float = 0.5, min_pad: int = 16) -> tuple[int, int, int, int]:
    """Pixel window ``(x0, y0, x1, y1)`` around ``box`` with context, clamped to ``shape``."""
    h, w = shape
    bw, bh = box.x1 - box.x0, box.y1 - box.y0
    px, py = max(min_pad, context * bw), max(min_pad, context * bh)
    x0, y0 = int(max(0, np.floor(box.x0 - px))), int(max(0, np.floor(box.y0 - py)))
    x1, y1 = int(min(w, np.ceil(box.x1 + px))), int(min(h, np.ceil(box.y1 + py)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def sample_crops(sample: Sample, context: float = 0.5, crop_size: int = 128, max_crops: int = 4) -> list[np.ndarray]:
    """Crops around the largest ``max_crops`` defect instances of ``sample`` (RGB uint8)."""
    boxes = sorted(_boxes(sample), key=lambda b: -b.area)[:max_crops]
    if not boxes:
        return []
    rgb = sample.rgb()
    out = []
    for b in boxes:
        x0, y0, x1, y1 = crop_box(rgb.shape[:2], b, context)
        out.append(rgb[y0:y1, x0:x1])
    return out


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def fidelity(output: np.ndarray, mask: np.ndarray, source: np.ndarray | None = None, ring: int = 6) -> dict[str, float]:
    """``change_in``, ``change_out``, ``fidelity`` (see module docstring) of one sample."""
    import cv2

    g = _grey(output)
    m = np.asarray(mask, bool)
    if m.shape != g.shape:
        raise InputError(None, f"mask is {m.shape[1]}x{m.shape[0]} but the image is {g.shape[1]}x{g.shape[0]}")
    if not m.any():
        return {"change_in": 0.0, "change_out": float("nan") if source is None else float(np.abs(g - _grey(source)).mean()),
                "fidelity": 0.0}
    if source is not None:
        if source.shape[:2] != output.shape[:2]:
            raise InputError(None, "source and synthetic image sizes differ")
        d = np.abs(g - _grey(source))
        cin = float(d[m].mean())
        cout = float(d[~m].mean()) if (~m).any() else 0.0
        return {"change_in": cin, "change_out": cout, "fidelity": cin - 2.0 * cout}
    k = np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)
    rim = cv2.dilate(m.astype(np.uint8), k).astype(bool) & ~m
    cin = float(abs(g[m].mean() - g[rim].mean())) if rim.any() else 0.0
    return {"change_in": cin, "change_out": float("nan"), "fidelity": cin}


def nearest_distance(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query row to its nearest row of ``ref``."""
    d2 = (query * query).sum(1)[:, None] + (ref * ref).sum(1)[None, :] - 2.0 * query @ ref.T
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def _source_image(sample: Sample, sources: dict[str, np.ndarray] | None) -> np.ndarray | None:
    if sources:
        src = sources.get(str(sample.meta.get("source", "")))
        if src is not None:
            return src
    sp = sample.meta.get("source_path")
    if sp and Path(str(sp)).is_file():
        from defectforge.data.image_io import as_rgb8, read_image

        src = as_rgb8(read_image(Path(str(sp))))
        return src if src.shape[:2] == sample.image.shape[:2] else None
    return None


def score_samples(synthetic: Sequence[Sample], real_defects: Sequence[Sample], embedder: Any = None,
                  sources: dict[str, np.ndarray] | None = None, clip: Any = None, prompt: str | None = None,
                  dreamsim: Any = None, context: float = 0.5, progress: Any = None, engine: Any = None,
                  chunk: int = 8) -> list[dict[str, Any]]:
    """One row of scores per synthetic sample (same order).

    ``sources`` maps ``meta['source']`` names to source images (else ``meta['source_path']``
    is read when it exists). ``clip`` is a :class:`~defectforge.filter.embed.ClipScorer` (needs
    ``prompt``); ``dreamsim`` any :class:`~defectforge.filter.embed.Embedder`.
    ``engine`` (:mod:`defectforge.engine`) scores the synthetic samples in chunks of
    ``chunk`` (default: this process); the real crops are embedded here, once.
    """
    from defectforge.engine.local import LocalEngine
    from defectforge.filter.embed import default_embedder

    emb = embedder or default_embedder()
    real_crops = [c for s in real_defects for c in sample_crops(s, context)]
    if not real_crops:
        raise InputError(None, "no real defect regions to compare with (the real set has no masks or boxes)")
    if clip is not None and not prompt:
        raise InputError(None, "CLIPScore needs a prompt (--prompt)")
    task = SampleScoreTask(emb.embed(real_crops), dreamsim.embed(real_crops) if dreamsim is not None else None,
                           emb, sources, clip, prompt, dreamsim, context)
    chunks = [tuple(synthetic[i:i + chunk]) for i in range(0, len(synthetic), max(1, int(chunk)))]
    rows: list[dict[str, Any]] = []
    means = []
    for _, part in (engine or LocalEngine(1)).map_ordered(task, chunks):
        for row, mean in part:
            rows.append(row)
            means.append(mean)
        if progress is not None:  # defectforge.progress protocol
            progress("scoring", len(rows), len(synthetic))
    if rows:
        M = np.stack(means)
        div = diversity(M)
        for r, d, e in zip(rows, div, M):
            r["diversity"] = float(d)
            r["_embedding"] = e
    return rows


class SampleScoreTask:
    """Scores of one chunk of synthetic samples against the real crops' embeddings
    (``real_f``, and ``real_d`` for DreamSim): ``[(row, mean crop embedding), ...]``. The
    embedders travel with the task (pickled once per job to each worker); the samples
    are read by path in the worker."""

    def __init__(self, real_f: np.ndarray, real_d: np.ndarray | None, embedder: Any, sources: Any, clip: Any,
                 prompt: str | None, dreamsim: Any, context: float):
        self.real_f, self.real_d, self.emb, self.sources = real_f, real_d, embedder, sources
        self.clip, self.prompt, self.dreamsim, self.context = clip, prompt, dreamsim, context

    def setup(self) -> None:
        pass

    def __call__(self, samples: Sequence[Sample]) -> list[tuple[dict[str, Any], np.ndarray]]:
        return [self.score_one(s) for s in samples]

    def score_one(self, s: Sample) -> tuple[dict[str, Any], np.ndarray]:
        crops = sample_crops(s, self.context)
        if not crops:
            raise InputError(s.path or s.name, "synthetic sample has no defect label (no mask and no boxes)")
        f = self.emb.embed(crops)
        mask = s.mask if s.mask is not None else _box_mask(s)
        src = _source_image(s, self.sources)
        row: dict[str, Any] = {"name": s.name, "label": s.label, "n_instances": len(_boxes(s)),
                               "has_source": src is not None,
                               "realism_distance": float(nearest_distance(f, self.real_f).mean()),
                               **fidelity(s.rgb(), mask, src)}
        if self.dreamsim is not None:
            row["dreamsim_distance"] = float(nearest_distance(self.dreamsim.embed(crops), self.real_d).mean())
        if self.clip is not None:
            row["clipscore"] = float(np.mean(self.clip.score(crops, self.prompt)))
        return row, f.mean(0)


def _box_mask(s: Sample) -> np.ndarray:
    h, w = s.image.shape[:2]
    m = np.zeros((h, w), bool)
    for b in _boxes(s):
        m[int(b.y0):int(np.ceil(b.y1)), int(b.x0):int(np.ceil(b.x1))] = True
    return m


def diversity(embeddings: np.ndarray) -> np.ndarray:
    """Distance of each row to its nearest *other* row (inf for a single row)."""
    e = np.asarray(embeddings, np.float64)
    if len(e) < 2:
        return np.full(len(e), np.inf)
    d2 = (e * e).sum(1)[:, None] + (e * e).sum(1)[None, :] - 2.0 * e @ e.T
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))
