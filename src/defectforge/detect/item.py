"""One image's prediction, as ``prediction[i]`` returns it, with ``plot()``, ``save()`` and
``to_dict()`` (ultralytics-style results on top of the one :class:`~defectforge.detect.base.Prediction`
contract).

``plot()`` draws on the input image when the prediction knows it (``Prediction.inputs``, set
by ``predict``), else on a grey canvas; anomaly maps use one colour scale with the model's
pixel threshold at the middle colour (:func:`defectforge.report.panels.map_scale`), so items
of one prediction compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class PredictionItem:
    index: int
    score: float
    label: bool
    anomaly_map: np.ndarray | None = None
    mask: np.ndarray | None = None
    boxes: list | None = None
    input: Any = None
    pixel_threshold: float | None = None

    @property
    def name(self) -> str:
        from defectforge.data.sample import Sample

        if isinstance(self.input, Sample):
            return self.input.name
        return f"image_{self.index:05d}"

    def image(self) -> np.ndarray:
        """The input image as RGB (a grey canvas of the map's size when it is unknown)."""
        from defectforge.data.image_io import as_rgb8
        from defectforge.data.sample import Sample

        if isinstance(self.input, Sample):
            return self.input.rgb()
        if self.input is not None:
            return as_rgb8(np.asarray(self.input))
        shape = self.anomaly_map.shape if self.anomaly_map is not None else (64, 64)
        return np.full((*shape, 3), 128, np.uint8)

    def plot(self, image: np.ndarray | None = None, scale: Any = None) -> np.ndarray:
        """An RGB picture: image | map | predicted mask | colour bar for map detectors, the
        boxes with their scores for box detectors."""
        img = self.image() if image is None else np.asarray(image)
        if self.anomaly_map is not None:
            from defectforge.report.panels import map_scale, panel

            sc = scale or map_scale(self.pixel_threshold, [self.anomaly_map])
            return panel(img, self.anomaly_map, sc, pred=self.mask, with_gt=False)
        from defectforge.report.visual import draw_boxes

        return draw_boxes(img, pred=self.boxes or [])

    def save(self, path: str | Path, image: np.ndarray | None = None) -> Path:
        """Write :meth:`plot` to ``path`` (format from the suffix, atomically)."""
        from defectforge.data.image_io import write_image

        return write_image(path, self.plot(image))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, score, label, mask area and map range, boxes."""
        out: dict[str, Any] = {"name": self.name, "score": float(self.score), "pred_defect": bool(self.label)}
        if self.anomaly_map is not None:
            out["map_min"] = float(np.min(self.anomaly_map))
            out["map_max"] = float(np.max(self.anomaly_map))
        if self.mask is not None:
            out["mask_pixels"] = int(np.count_nonzero(self.mask))
        if self.boxes is not None:
            out["boxes"] = [{"x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "label": b.label, "score": b.score}
                            for b in self.boxes]
        return out


def item_of(pred: Any, i: int) -> PredictionItem:
    """``pred[i]`` (negative indices count from the end)."""
    n = len(pred)
    if not -n <= i < n:
        raise IndexError(f"prediction index {i} out of range for {n} images")
    i %= n
    inputs = getattr(pred, "inputs", None)

    def pick(seq):
        return None if seq is None else seq[i]

    return PredictionItem(index=i, score=float(pred.pred_score[i]), label=bool(pred.pred_label[i]),
                          anomaly_map=pick(pred.anomaly_map), mask=pick(pred.pred_mask), boxes=pick(pred.boxes),
                          input=pick(inputs), pixel_threshold=getattr(pred, "pixel_threshold", None))
