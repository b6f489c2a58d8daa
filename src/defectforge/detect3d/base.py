"""The 3D detector base class, its registry and model files.

Every 3D detector is a :class:`defectforge.estimator.Estimator` (parameters in
``__init__``, fitted attributes ending in ``_``) registered in :data:`DETECTORS3D`
(``@DETECTORS3D.register("fpfh")``); :func:`get_detector3d` makes one by name. Files use
the one model-file format of :mod:`defectforge.estimator` with kind
``"defectforge.detector3d"``; the CLI stores one detector per category in one file
(:func:`save_models` / :func:`load_models3d`). Round-1 files (format 1) still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from defectforge.detect.base import Prediction
from defectforge.estimator import Estimator, create_estimator, load_models, save_models
from defectforge.registry import Registry

__all__ = ["DETECTORS3D", "Detector3D", "get_detector3d", "load_models3d", "save_models"]


class Detector3D(Estimator):
    """Base of the 3D (point-cloud) anomaly detectors: ``fit(normal_clouds)`` returns
    ``self``; ``predict(clouds)`` a :class:`~defectforge.detect.base.Prediction` whose
    ``anomaly_map`` holds one score per input point."""

    name = "detector3d"
    model_kind = "defectforge.detector3d"
    file_what = "3D detector"
    fitted_marker = "bank_"

    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | None = None) -> "Detector3D":
        raise NotImplementedError

    def predict(self, clouds: Iterable[Any]) -> Prediction:
        raise NotImplementedError

    legacy_kinds = ("defectforge.detect3d",)

    @classmethod
    def _upgrade(cls, obj: dict[str, Any], version: Any) -> dict[str, Any] | None:
        # round-1 files: kind "defectforge.detect3d", format 1, {"class", "config", **state} per model
        if obj.get("kind") != "defectforge.detect3d" or version != 1 or not isinstance(obj.get("models"), dict):
            return None
        models = {}
        for name, p in obj["models"].items():
            models[name] = {"class": p.get("class"), "params": p.get("config", {}),
                            "state": {k: v for k, v in p.items() if k not in ("class", "config")}}
        return {"models": models}


DETECTORS3D: Registry[type[Detector3D]] = Registry(
    "3D detector", builtin=("defectforge.detect3d.bank", "defectforge.detect3d.pointnet"), base=Detector3D,
    entry_points="defectforge.detectors3d")
Detector3D.registry = DETECTORS3D


def get_detector3d(name: str, **kwargs: Any) -> Detector3D:
    """A new, unfitted 3D detector by name (``"fpfh"``, ``"pointnet"``, ...)."""
    return create_estimator(DETECTORS3D, name, kwargs)


def load_models3d(path: str | Path, **runtime: Any) -> dict[str, Detector3D]:
    """``{category: detector}`` of a 3D model file (``{"default": det}`` for one saved
    with ``det.save``)."""
    return load_models(path, Detector3D, **runtime)  # type: ignore[return-value]
