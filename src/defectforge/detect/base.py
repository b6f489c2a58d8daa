"""The one output contract every detector returns, the 2D detector base class and the
registry of 2D detectors (``get_detector("patchcore")``, timm style).

:class:`Prediction` is shared by the 2D memory-bank detectors here, the 3D detectors
(:mod:`defectforge.detect3d`, per-point maps) and the box detectors
(:mod:`defectforge.supervised`, ``boxes``), so downstream code (metrics, reports, CLI)
handles all of them the same way.

Every detector is a :class:`defectforge.estimator.Estimator` (scikit-learn's rules:
parameters in ``__init__``, fitted attributes ending in ``_``, ``get_params`` /
``set_params`` / ``clone``, ``fit`` returns ``self``, ``predict`` before ``fit`` raises
:class:`~defectforge.estimator.NotFittedError`) and is saved in the one model-file format
of :mod:`defectforge.estimator`. 2D detectors register with
``@register_detector("name")``; :func:`load_detector` loads any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from defectforge.estimator import Estimator, create_estimator
from defectforge.registry import Registry

if TYPE_CHECKING:
    from defectforge.data.sample import Box


@dataclass
class Prediction:
    """Predictions for N images (or point clouds).

    - ``pred_score``: ``(N,)`` float64 raw scores (higher = more anomalous; never
      normalised or clamped, so rank metrics can use them directly). Box detectors: the
      highest box score of each image (0 without boxes).
    - ``anomaly_map``: one ``H x W`` float32 map per image at that image's **original**
      resolution (3D: one score per input point), or ``None`` for detectors without
      localisation.
    - ``pred_label``: ``(N,)`` bool, ``pred_score >= threshold`` (threshold chosen on a
      validation split at fit time).
    - ``pred_mask``: one bool ``H x W`` mask per image (``anomaly_map >= pixel
      threshold``), or ``None``.
    - ``boxes``: box detectors only: the boxes (with labels and scores) of each image in
      its original pixel coordinates; ``None`` otherwise.
    """

    pred_score: np.ndarray
    anomaly_map: list[np.ndarray] | None
    pred_label: np.ndarray
    pred_mask: list[np.ndarray] | None
    boxes: "list[list[Box]] | None" = None

    def __len__(self) -> int:
        return int(len(self.pred_score))

    def __getitem__(self, i: int):
        """One image's :class:`~defectforge.detect.item.PredictionItem` (``plot``, ``save``, ``to_dict``)."""
        from defectforge.detect.item import item_of

        return item_of(self, i)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @staticmethod
    def concat(parts: Iterable["Prediction"]) -> "Prediction":
        """Join predictions of consecutive chunks into one."""
        parts = list(parts)
        if not parts:
            return Prediction(np.zeros(0), [], np.zeros(0, bool), [])

        def join(attr: str) -> list | None:
            return None if getattr(parts[0], attr) is None else [m for p in parts for m in (getattr(p, attr) or [])]

        return Prediction(
            np.concatenate([p.pred_score for p in parts]).astype(np.float64),
            join("anomaly_map"),
            np.concatenate([p.pred_label for p in parts]).astype(bool),
            join("pred_mask"),
            join("boxes"),
        )


class Detector(Estimator):
    """Base class of the 2D anomaly detectors: ``fit(normal, defects=None)`` returns
    ``self``, ``predict(images)`` a :class:`Prediction`; ``save(path)`` /
    ``Detector.load(path)`` through the one model-file format."""

    name = "detector"
    model_kind = "defectforge.detector2d"

    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | None = None) -> "Detector":
        raise NotImplementedError

    def predict(self, images: Iterable[Any]) -> Prediction:
        raise NotImplementedError

    legacy_kinds = ("defectforge.detect.exdd",)

    @classmethod
    def _upgrade(cls, obj: dict[str, Any], version: Any) -> dict[str, Any] | None:
        # round-1 files: kind "defectforge.detect.exdd", format 1, a "config" and flat state
        if obj.get("kind") != "defectforge.detect.exdd" or version != 1:
            return None
        state = {k: obj[k] for k in ("input_size", "grid", "feature_dim", "bank_normal", "bank_defect",
                                     "threshold", "pixel_threshold") if k in obj}
        state["fit_info"] = obj.get("fit_info", {})
        cfg = dict(obj.get("config", {}))
        state["layers"] = cfg.get("layers") or []
        return {"class": obj.get("class"), "params": cfg, "state": state}


DETECTORS: Registry[type[Detector]] = Registry("detector", builtin=("defectforge.detect.exdd",), base=Detector,
                                                 entry_points="defectforge.detectors2d")
Detector.registry = DETECTORS


def register_detector(name: str):
    """Class decorator: make a :class:`Detector` subclass available as ``get_detector(name)``."""
    return DETECTORS.register(name)


def available_detectors() -> list[str]:
    return DETECTORS.names()


def get_detector(name: str, **kwargs: Any) -> Detector:
    """A new, unfitted detector by name (``"patchcore"``, ``"exdd"``) with ``kwargs``
    (unknown or invalid parameters raise :class:`ConfigError`)."""
    return create_estimator(DETECTORS, name, kwargs)


def load_detector(path: str | Path, **runtime: Any) -> Detector:
    """Any registered 2D detector saved with ``save`` (``progress=True`` for bars)."""
    return Detector.load(path, **runtime)  # type: ignore[return-value]
