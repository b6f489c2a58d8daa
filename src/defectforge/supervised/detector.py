"""The box detector estimator: one registered architecture, trained by
:func:`~defectforge.supervised.train.train_detector`, predicting boxes.

:class:`BoxDetector` follows the estimator rules of :mod:`defectforge.estimator`: its
parameters are the fields of :class:`~defectforge.supervised.train.TrainConfig` (plus
``progress``), ``fit`` trains and returns ``self``, fitted attributes are ``classes_``,
``model_`` (the network) and ``info_`` (history, validation, ...). ``predict`` returns the
shared :class:`~defectforge.detect.base.Prediction` with ``boxes`` filled in. Files
(``model.pt`` / ``best.pt``) use the one model-file format (kind
``"defectforge.boxdetector"``, loaded with ``weights_only=True``); round-1 files, which
had no kind, still load.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectforge.data.sample import Box, Sample
from defectforge.detect.base import Prediction
from defectforge.estimator import Estimator
from defectforge.supervised.train import TrainConfig
from defectforge.supervised.train_data import _resize


def boxes_prediction(boxes: list[list[Box]]) -> Prediction:
    """The shared prediction of box lists: ``pred_score`` = best box score per image (0
    without boxes), ``pred_label`` = the image has a box, no maps."""
    score = np.array([max((b.score or 0.0 for b in bs), default=0.0) for bs in boxes], dtype=np.float64)
    return Prediction(score, None, np.array([len(bs) > 0 for bs in boxes], dtype=bool), None, boxes)


def _train_config_init():
    """``__init__`` taking every TrainConfig field (with its default) plus ``progress`` and
    ``device`` (run-time settings, not stored in the model file), as
    an explicit signature (so get_params / clone / the model file see them)."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
               for f in fields(TrainConfig)]
    params.append(inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=False))
    params.append(inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default="cpu"))
    sig = inspect.Signature(params)

    def __init__(self, **kwargs: Any) -> None:
        bound = sig.bind(self, **kwargs)
        bound.apply_defaults()
        for k, v in bound.arguments.items():
            if k != "self":
                setattr(self, k, v)

    __init__.__signature__ = sig  # type: ignore[attr-defined]
    return __init__


class BoxDetector(Estimator):
    """A supervised box detector (``fit(train_samples)`` -> ``self``; ``predict`` -> boxes)."""

    name = "boxes"
    model_kind = "defectforge.boxdetector"
    file_what = "detector"
    fitted_marker = "model_"
    runtime_params = ("progress", "device")

    __init__ = _train_config_init()

    @property
    def config(self) -> TrainConfig:
        """The parameters as a :class:`TrainConfig` (a copy)."""
        return TrainConfig(**{k: v for k, v in self.get_params().items() if k not in self.runtime_params})

    def _validate_params(self) -> None:
        self.config.check()

    @classmethod
    def from_config(cls, config: TrainConfig, classes: Sequence[str], device: str = "cpu") -> "BoxDetector":
        """A detector with ``config``'s parameters and a freshly initialised network for
        ``classes`` (seeded by ``config.seed``, on ``device``), ready to be trained."""
        det = cls(**asdict(config), device=device)
        det._validate_params()
        det._build(classes)
        return det

    def _build(self, classes: Sequence[str]) -> None:
        import torch

        from defectforge.supervised.models import build_detector

        c = self.config
        self.classes_ = list(classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.model_ = build_detector(c.arch, len(self.classes_), c.image_size, c.trainable_stages,
                                         c.random_init, score_thresh=c.score_thresh)
        self.model_.to(self.torch_device())  # built (and seeded) on the CPU, the same weights on any device
        self.info_: dict[str, Any] = {}

    def torch_device(self):
        """The ``torch.device`` the network runs on (``device``: auto, cpu, cuda[:N])."""
        import torch

        from defectforge._device import resolve_device

        return torch.device(resolve_device(self.device))

    # ------------------------------------------------------------------ fit / predict
    def fit(self, train: Sequence[Sample], val: Sequence[Sample] | None = None, *, out_dir: str | Path | None = None,
            classes: Sequence[str] | None = None, overwrite: bool = False, on_epoch: Any = None) -> "BoxDetector":
        """Train on ``train`` (validation carved from it unless ``val``), checkpointing to
        ``out_dir`` (a temporary folder when None; resumed when rerun) and keep the best
        model on validation."""
        import tempfile

        from defectforge.supervised.train import train_detector

        from defectforge.progress import rich_progress

        self._validate_params()
        with contextlib.ExitStack() as stack:
            progress = self.progress if callable(self.progress) else None
            if self.progress is True:
                progress = stack.enter_context(rich_progress())
            if out_dir is None:
                out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="defectforge-boxes-"))
            best = train_detector(train, out_dir, self.config, val=val, classes=classes, overwrite=overwrite,
                                  progress=progress, on_epoch=on_epoch, device=self.device)
        self.classes_, self.model_, self.info_ = best.classes_, best.model_, best.info_
        return self

    def predict(self, samples: Sequence[Sample | np.ndarray], batch_size: int = 4) -> Prediction:
        """Boxes with scores per image, in the images' original pixel coordinates. ``samples``:
        image paths, folders, glob patterns, Samples, PIL images or arrays (one or a list)."""
        import torch

        from defectforge.data.image_io import as_rgb8
        from defectforge.data.inputs import as_items

        samples = as_items(samples)
        self._check_fitted()
        self.model_.eval()
        dev = self.torch_device()
        self.model_.to(dev)
        out: list[list[Box]] = []
        with torch.inference_mode():
            for s in range(0, len(samples), batch_size):
                imgs, scales = [], []
                for it in samples[s:s + batch_size]:
                    rgb = it.rgb() if isinstance(it, Sample) else as_rgb8(np.asarray(it))
                    r, sc = _resize(rgb, self.image_size)
                    imgs.append(torch.from_numpy(np.array(r, copy=True)).permute(2, 0, 1).float().div_(255.0).to(dev))
                    scales.append(sc)
                for det, sc in zip(self.model_(imgs), scales):
                    det = {k: v.cpu() for k, v in det.items()}
                    bx = (det["boxes"].numpy() / sc).tolist()
                    out.append([Box(b[0], b[1], b[2], b[3], self.classes_[int(lab) - 1], float(p))
                                for b, lab, p in zip(bx, det["labels"].tolist(), det["scores"].tolist())])
        return boxes_prediction(out)

    # ------------------------------------------------------------------ state
    def weights(self) -> dict[str, Any]:
        """The learnt weights: everything but a frozen backbone body (that one is rebuilt
        from the bundled ImageNet weights), which keeps checkpoints small. On the CPU, whatever
        ``device`` trained them, so every file loads anywhere."""
        sd = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        if self.trainable_stages == 0 and not self.random_init:
            sd = {k: v for k, v in sd.items() if not k.startswith("backbone.body.")}
        return sd

    def load_weights(self, sd: dict[str, Any]) -> None:
        missing, unexpected = self.model_.load_state_dict(sd, strict=False)
        bad = [k for k in missing if not k.startswith("backbone.body.")] + list(unexpected)
        if bad:
            raise KeyError(f"weights do not fit the detector: {bad[:3]}")

    def _get_state(self) -> dict[str, Any]:
        return {"classes": list(self.classes_), "model": self.weights(), "info": dict(self.info_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._validate_params()
        self._build(state["classes"])
        self.load_weights(state["model"])
        self.info_ = dict(state.get("info", {}))

    @classmethod
    def _upgrade(cls, obj: dict[str, Any], version: Any) -> dict[str, Any] | None:
        # round-1 files: no kind and no version, {"config", "classes", "model", "info"}
        if "kind" in obj or not {"config", "classes", "model"} <= set(obj):
            return None
        names = {f.name for f in fields(TrainConfig)}
        return {"class": cls.__name__, "params": {k: v for k, v in obj["config"].items() if k in names},
                "state": {"classes": obj["classes"], "model": obj["model"], "info": obj.get("info", {})}}
