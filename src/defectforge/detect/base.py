"""The one output contract every detector returns, a small detector base class and a
registry of named detectors (``get_detector("patchcore")``, timm style).

:class:`Prediction` is shared by the 2D memory-bank detectors here and by the 3D and
supervised detectors elsewhere, so downstream code (metrics, reports, CLI) handles all
of them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from defectforge.errors import ConfigError


@dataclass
class Prediction:
    """Predictions for N images.

    - ``pred_score``: ``(N,)`` float64 raw image scores (higher = more anomalous; never
      normalised or clamped, so rank metrics can use them directly).
    - ``anomaly_map``: one ``H x W`` float32 map per image at that image's **original**
      resolution, or ``None`` for detectors without localisation.
    - ``pred_label``: ``(N,)`` bool, ``pred_score >= threshold`` (threshold chosen on a
      validation split at fit time).
    - ``pred_mask``: one bool ``H x W`` mask per image (``anomaly_map >= pixel
      threshold``), or ``None``.
    """

    pred_score: np.ndarray
    anomaly_map: list[np.ndarray] | None
    pred_label: np.ndarray
    pred_mask: list[np.ndarray] | None

    def __len__(self) -> int:
        return int(len(self.pred_score))

    @staticmethod
    def concat(parts: Iterable["Prediction"]) -> "Prediction":
        """Join predictions of consecutive chunks into one."""
        parts = list(parts)
        if not parts:
            return Prediction(np.zeros(0), [], np.zeros(0, bool), [])
        maps = None if parts[0].anomaly_map is None else [m for p in parts for m in (p.anomaly_map or [])]
        masks = None if parts[0].pred_mask is None else [m for p in parts for m in (p.pred_mask or [])]
        return Prediction(
            np.concatenate([p.pred_score for p in parts]).astype(np.float64),
            maps,
            np.concatenate([p.pred_label for p in parts]).astype(bool),
            masks,
        )


class Detector:
    """Base class of defectforge detectors (sklearn-like).

    Subclasses take all parameters in ``__init__`` and implement :meth:`fit`,
    :meth:`predict`, :meth:`save` and the class method :meth:`load`.
    """

    name: str = "detector"

    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | None = None) -> "Detector":
        raise NotImplementedError

    def predict(self, images: Iterable[Any]) -> Prediction:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> "Detector":
        raise NotImplementedError


_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Class decorator: make a detector available as ``get_detector(name)``."""

    def deco(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        _REGISTRY[name.lower()] = factory
        return factory

    return deco


def available_detectors() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def get_detector(name: str, **kwargs: Any) -> Detector:
    """A new, unfitted detector by name (``"patchcore"``, ``"exdd"``) with ``kwargs``."""
    _import_builtin()
    key = name.lower()
    if key not in _REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key](**kwargs)


def _import_builtin() -> None:
    # Registration happens on import of the module that defines the detector.
    import defectforge.detect.exdd  # noqa: F401
