"""ExDD (explicit dual memory bank) with PatchCore as its one-bank case.

A frozen backbone turns each image into a grid of locally aware patch rows
(:mod:`~defectforge.detect.features`). The **normal bank** M- is a greedy k-center
coreset (~1 %) of the rows of defect-free training images; the **defect bank** M+ a
coreset (~10 %) of the rows that lie *inside defect masks* of real and/or synthetic
defect images. A test patch is anomalous when it is far from M- and close to M+:

- pixel map: ``d-(p) / (d+(p) + eps)`` per patch (``d-(p)`` alone without M+), upsampled
  to the input size, Gaussian-smoothed (sigma 4), resized to the image's own size;
- image score: ``w- s-* / (w+ s+* + eps)`` with ExDD's neighbourhood-aware weights (k=3),
  or PatchCore's re-weighted max, or the max of the map (``image_score="max"``).

With an empty defect bank every formula reduces to PatchCore, through the same code path;
:class:`PatchCore` is this class with PatchCore's defaults (weighting over b=9
neighbours, 10 % coreset) that uses defect images, when given, only for validation.

Fitting carves a seeded validation split from the normal training images (never test
data), scores it, and stores the image and pixel thresholds in the model.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from defectforge.detect.base import Detector, Prediction, register_detector
from defectforge.errors import ConfigError, InputError

FORMAT_VERSION = 1
_MODEL_KIND = "defectforge.detect.exdd"


class EmptyDefectMaskWarning(UserWarning):
    """A defect image without mask pixels (or without a mask) was skipped for the defect bank."""


@dataclass
class ExDDConfig:
    """All parameters of :class:`ExDD` (stored in the model file)."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] | None = None
    weights: str | None = None
    random_init: bool = False
    image_size: int | tuple[int, int] = 256
    upsample: str = "bilinear"
    normal_ratio: float = 0.01
    defect_ratio: float = 0.10
    coreset_min: int = 0
    projection_dim: int | None = 128
    weighting: str = "exdd"
    num_neighbors: int = 3
    image_score: str = "weighted"
    eps: float = 1e-6
    sigma: float = 4.0
    map_upsample: str = "bilinear"
    mask_fraction: float = 0.5
    val_fraction: float = 0.1
    threshold_quantile: float = 0.99
    pixel_quantile: float = 0.999
    defects_for: str = "bank"
    batch_size: int = 4
    nn_backend: str = "faiss"
    seed: int = 0

    def check(self) -> None:
        if self.weighting not in ("exdd", "patchcore", "none"):
            raise ConfigError(f"weighting must be exdd|patchcore|none, got {self.weighting!r}")
        if self.image_score not in ("weighted", "max", "patch_max"):
            raise ConfigError(f"image_score must be weighted|max|patch_max, got {self.image_score!r}")
        if self.upsample not in ("bilinear", "nearest") or self.map_upsample not in ("bilinear", "nearest"):
            raise ConfigError("upsample / map_upsample must be 'bilinear' or 'nearest'")
        if self.defects_for not in ("bank", "validation"):
            raise ConfigError(f"defects_for must be 'bank' or 'validation', got {self.defects_for!r}")
        for name in ("normal_ratio", "defect_ratio"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {v}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 < self.mask_fraction <= 1.0:
            raise ConfigError(f"mask_fraction must be in (0, 1], got {self.mask_fraction}")
        if self.num_neighbors < 1 or self.batch_size < 1:
            raise ConfigError("num_neighbors and batch_size must be >= 1")
        if self.eps <= 0:
            raise ConfigError(f"eps must be > 0, got {self.eps}")
        if isinstance(self.image_size, (tuple, list)):
            if len(self.image_size) != 2 or min(self.image_size) < 16:
                raise ConfigError(f"image_size must be an int or (H, W) >= 16, got {self.image_size}")
        elif int(self.image_size) < 16:
            raise ConfigError(f"image_size must be >= 16, got {self.image_size}")


@register_detector("exdd")
class ExDD(Detector):
    """ExDD dual-memory-bank detector (sklearn-like).

    ``ExDD(backbone="efficientnet_lite0", layers=None, weights=None, random_init=False,
    image_size=256, ...)``: see :class:`ExDDConfig` for every parameter. ``image_size`` as
    an int is the shorter side; the longer one keeps the aspect ratio of the first
    training image (rounded to a multiple of 8) and the resulting ``(H, W)`` is fixed in
    the model, so all later images are resized to it. ``progress=True`` shows rich
    progress bars (stderr).
    """

    name = "exdd"
    _defaults: dict[str, Any] = {}

    def __init__(self, progress: bool = False, **params: Any):
        kw = dict(self._defaults)
        kw.update(params)
        known = {f.name for f in fields(ExDDConfig)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ConfigError(f"unknown parameter(s) for {type(self).__name__}: {unknown}")
        if kw.get("layers") is not None:
            kw["layers"] = tuple(kw["layers"])
        if isinstance(kw.get("image_size"), list):
            kw["image_size"] = tuple(kw["image_size"])
        if kw.get("weights") is not None:
            kw["weights"] = str(kw["weights"])
        self.config = ExDDConfig(**kw)
        self.config.check()
        self.progress = progress
        self._extractor = None
        self.input_size: tuple[int, int] | None = None
        self.grid: tuple[int, int] | None = None
        self.bank_normal: np.ndarray | None = None
        self.bank_defect: np.ndarray | None = None
        self.threshold: float | None = None
        self.pixel_threshold: float | None = None
        self.fit_info: dict[str, Any] = {}
        self._nn_normal = None
        self._nn_defect = None

    # ------------------------------------------------------------------ params
    def get_params(self) -> dict[str, Any]:
        return asdict(self.config)

    def __repr__(self) -> str:
        diff = {k: v for k, v in self.get_params().items() if v != getattr(ExDDConfig, k, None)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in diff.items())})"

    # ------------------------------------------------------------------ backbone
    @property
    def extractor(self):
        if self._extractor is None:
            from defectforge.detect.backbone import build_extractor

            c = self.config
            self._extractor, _ = build_extractor(c.backbone, c.layers, c.weights, c.random_init, seed=c.seed)
            self._extractor = self._extractor.to(memory_format=__import__("torch").channels_last)
            if c.layers is None:
                self.config.layers = tuple(self._extractor.layers)
        return self._extractor

    def _rows(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Patch rows ``(B*h*w, C)`` of a batch of RGB uint8 images at the input size."""
        import torch

        from defectforge.detect.features import embed, to_rows, to_tensor

        ex = self.extractor
        x = to_tensor(images, self.input_size, ex.mean, ex.std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            emb = embed(ex(x), self.config.upsample)
        self.grid = (int(emb.shape[2]), int(emb.shape[3]))
        return to_rows(emb)

    def _setup_size(self, first_rgb: np.ndarray) -> None:
        import torch

        from defectforge.detect.features import embed, input_size_for

        s = self.config.image_size
        self.input_size = tuple(int(v) for v in s) if isinstance(s, (tuple, list)) else input_size_for(first_rgb.shape[:2], int(s))
        with torch.inference_mode():
            emb = embed(self.extractor(torch.zeros(1, 3, *self.input_size)), self.config.upsample)
        self.grid = (int(emb.shape[2]), int(emb.shape[3]))
        self.feature_dim = int(emb.shape[1])

    # ------------------------------------------------------------------ fit
    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | None = None) -> "ExDD":
        """Build the banks from defect-free ``normal`` images and (ExDD) the masked
        regions of ``defects`` (``Sample`` s with masks, or ``(image, mask)`` pairs), then
        choose thresholds on a validation split carved from ``normal``."""
        from defectforge.detect._progress import progress_task
        from defectforge.detect.coreset import coreset_size, greedy_kcenter
        from defectforge.detect.features import random_projection, to_rgb
        from defectforge.detect.knn import NearestNeighbors

        c = self.config
        normal = list(normal)
        defects = list(defects) if defects is not None else []
        if len(normal) == 0:
            raise ConfigError("fit needs at least one normal (defect-free) training image")
        rng = np.random.default_rng(c.seed)
        n_val = int(round(c.val_fraction * len(normal))) if c.val_fraction > 0 else 0
        if c.val_fraction > 0:
            n_val = max(1, n_val)
            if len(normal) - n_val < 1:
                raise ConfigError(
                    f"{len(normal)} normal image(s) cannot give both a training and a validation split; "
                    "pass more images or val_fraction=0 (then no threshold is chosen)")
        perm = rng.permutation(len(normal))
        val_items = [normal[i] for i in sorted(perm[:n_val])]
        train_items = [normal[i] for i in sorted(perm[n_val:])]

        first = to_rgb(train_items[0])
        self._setup_size(first)
        h, w = self.grid
        per = h * w
        n_rows = len(train_items) * per
        D = self.feature_dim
        proj = None
        if c.projection_dim is not None and c.projection_dim < D:
            proj = random_projection(D, int(c.projection_dim), c.seed)
        store = np.empty((n_rows, D), dtype=np.float32)
        sel_store = np.empty((n_rows, proj.shape[1]), dtype=np.float32) if proj is not None else store

        import time

        t0 = time.perf_counter()
        with progress_task("features (normal)", len(train_items), self.progress) as bar:
            for s in range(0, len(train_items), c.batch_size):
                batch = [first if s + j == 0 else to_rgb(it) for j, it in enumerate(train_items[s:s + c.batch_size])]
                rows = self._rows(batch)
                store[s * per:s * per + len(rows)] = rows
                if proj is not None:
                    np.matmul(rows, proj, out=sel_store[s * per:s * per + len(rows)])
                bar.advance(len(batch))
        t1 = time.perf_counter()
        target = coreset_size(n_rows, c.normal_ratio, c.coreset_min)
        with progress_task("coreset (normal bank)", target, self.progress) as bar:
            idx = greedy_kcenter(sel_store, target, seed=c.seed, progress=bar.update)
        self.bank_normal = np.ascontiguousarray(store[np.sort(idx)])
        del store, sel_store
        t2 = time.perf_counter()

        # ---- defect bank (ExDD) or defect validation images (PatchCore)
        val_defects: list[Any] = []
        self.bank_defect = np.zeros((0, D), dtype=np.float32)
        n_def_used = 0
        if defects and c.defects_for == "bank":
            parts = []
            with progress_task("features (defect regions)", len(defects), self.progress) as bar:
                for k, it in enumerate(defects):
                    sel = self._defect_rows(it, k)
                    if sel is not None:
                        parts.append(sel)
                        n_def_used += 1
                    bar.advance()
            if parts:
                drows = np.concatenate(parts)
                dsel = drows @ proj if proj is not None else drows
                target_d = coreset_size(len(drows), c.defect_ratio, c.coreset_min)
                with progress_task("coreset (defect bank)", target_d, self.progress) as bar:
                    didx = greedy_kcenter(dsel, target_d, seed=c.seed, progress=bar.update)
                self.bank_defect = np.ascontiguousarray(drows[np.sort(didx)])
            else:
                warnings.warn("no defect image contributed rows: the defect bank is empty (PatchCore behaviour)",
                              EmptyDefectMaskWarning, stacklevel=2)
        elif defects:
            val_defects = defects
        t3 = time.perf_counter()
        from defectforge.detect.model_checks import check_finite_state

        check_finite_state(c.weights, {"bank_normal": self.bank_normal, "bank_defect": self.bank_defect},
                           cause="the backbone produced non-finite features (corrupt --weights?)")
        self._nn_normal = NearestNeighbors(self.bank_normal, c.nn_backend)
        self._nn_defect = NearestNeighbors(self.bank_defect, c.nn_backend) if len(self.bank_defect) else None

        # ---- thresholds on validation (never test)
        self.threshold = self.pixel_threshold = None
        n_val_def = 0
        if val_items:
            self._choose_thresholds(val_items, val_defects)
            n_val_def = len(val_defects)
        else:
            warnings.warn("val_fraction=0: no validation split, so no threshold is chosen; "
                          "pred_label / pred_mask will be all False", UserWarning, stacklevel=2)
        self.fit_info = {
            "n_train_normal": len(train_items), "n_val_normal": len(val_items), "n_val_defect": n_val_def,
            "n_defect_images_in_bank": n_def_used, "n_rows_normal": int(n_rows),
            "bank_normal": int(len(self.bank_normal)), "bank_defect": int(len(self.bank_defect)),
            "feature_dim": D, "grid": list(self.grid), "input_size": list(self.input_size),
            "seconds_features": round(t1 - t0, 3), "seconds_coreset": round(t2 - t1, 3),
            "seconds_defect_bank": round(t3 - t2, 3),
        }
        return self

    def _defect_rows(self, item: Any, k: int) -> np.ndarray | None:
        """Rows of one defect image whose grid cell is at least ``mask_fraction`` defect."""
        from defectforge.data.sample import Sample
        from defectforge.detect.features import mask_to_grid, to_rgb

        if isinstance(item, Sample):
            rgb, mask, name = to_rgb(item), item.mask, item.name
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            rgb, mask, name = to_rgb(item[0]), (None if item[1] is None else np.asarray(item[1]) > 0), f"defect_{k:05d}"
        else:
            raise InputError(None, "defect images must be Samples with masks or (image, mask) pairs")
        if mask is None or not mask.any():
            warnings.warn(f"{name}: defect image has {'no' if mask is None else 'an empty'} mask; "
                          "skipped for the defect bank", EmptyDefectMaskWarning, stacklevel=3)
            return None
        if mask.shape != rgb.shape[:2]:
            raise InputError(getattr(item, "mask_path", None) or name,
                             f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}")
        rows = self._rows([rgb])
        frac = mask_to_grid(mask, self.grid).reshape(-1)
        keep = frac >= self.config.mask_fraction
        if not keep.any():  # a defect smaller than one cell: keep its best-covered cell(s)
            keep = frac >= frac.max() - 1e-9
        return rows[keep]

    def _choose_thresholds(self, val_items: list[Any], val_defects: list[Any]) -> None:
        from defectforge.metrics import select_threshold

        self.threshold = float("inf")
        self.pixel_threshold = float("inf")
        scores, maps = self._score(val_items + val_defects, keep_input_maps=True)
        labels = np.array([False] * len(val_items) + [True] * len(val_defects))
        method = "f1" if val_defects else "quantile"
        self.threshold = float(select_threshold(labels, scores, method=method, quantile=self.config.threshold_quantile))
        normal_px = np.concatenate([m.reshape(-1) for m, lab in zip(maps, labels) if not lab])
        self.pixel_threshold = float(np.quantile(normal_px, self.config.pixel_quantile))

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if self.bank_normal is None:
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    def predict(self, images: Iterable[Any]) -> Prediction:
        """Scores, maps (at each image's own size), labels and masks for ``images``
        (``Sample`` s or H x W [x C] arrays of any size; grey is converted to RGB)."""
        self._check_fitted()
        import cv2

        items = list(images)
        scores, maps, shapes = self._score(items, keep_input_maps=True, return_shapes=True)
        out_maps = []
        for m, (H, W) in zip(maps, shapes):
            out_maps.append(m if m.shape == (H, W) else cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR))
        thr = self.threshold if self.threshold is not None else float("inf")
        pthr = self.pixel_threshold if self.pixel_threshold is not None else float("inf")
        return Prediction(
            pred_score=scores.astype(np.float64),
            anomaly_map=out_maps,
            pred_label=scores >= thr,
            pred_mask=[m >= pthr for m in out_maps],
        )

    def _score(self, items: list[Any], keep_input_maps: bool = True, return_shapes: bool = False):
        """Image scores and maps at the model input size for ``items``."""
        from defectforge.detect._progress import progress_task
        from defectforge.detect.features import to_rgb
        from defectforge.detect.scoring import patch_maps_to_input

        c = self.config
        h, w = self.grid
        per = h * w
        scores = np.empty(len(items), dtype=np.float64)
        maps: list[np.ndarray] = []
        shapes: list[tuple[int, int]] = []
        with progress_task("scoring", len(items), self.progress) as bar:
            for s in range(0, len(items), c.batch_size):
                rgbs = [to_rgb(it) for it in items[s:s + c.batch_size]]
                shapes.extend(r.shape[:2] for r in rgbs)
                rows = self._rows(rgbs)
                dn, inn = self._nn_normal.search(rows, 1)
                dn, inn = dn[:, 0].reshape(len(rgbs), per), inn[:, 0].reshape(len(rgbs), per)
                if self._nn_defect is not None:
                    dp, ip = self._nn_defect.search(rows, 1)
                    dp, ip = dp[:, 0].reshape(len(rgbs), per), ip[:, 0].reshape(len(rgbs), per)
                    patch = dn / (dp + c.eps)
                else:
                    dp = ip = None
                    patch = dn
                full = patch_maps_to_input(patch.reshape(len(rgbs), h, w), self.input_size, c.map_upsample, c.sigma)
                rows3 = rows.reshape(len(rgbs), per, -1)
                for b in range(len(rgbs)):
                    if c.image_score == "max":
                        scores[s + b] = float(full[b].max())
                    elif c.image_score == "patch_max":
                        scores[s + b] = float(patch[b].max())
                    else:
                        scores[s + b] = self._image_score(rows3[b], dn[b], inn[b],
                                                          None if dp is None else dp[b], None if ip is None else ip[b])
                    if keep_input_maps:
                        maps.append(full[b])
                bar.advance(len(rgbs))
        if return_shapes:
            return scores, maps, shapes
        return scores, maps

    def _bank_weight(self, bank: str, p_star: np.ndarray, s_star: float, m_idx: int) -> float:
        """Weight of one bank's max-min distance (see :mod:`~defectforge.detect.scoring`)."""
        from defectforge.detect.scoring import exdd_ratio, patchcore_weight

        c = self.config
        nn = self._nn_normal if bank == "normal" else self._nn_defect
        data = self.bank_normal if bank == "normal" else self.bank_defect
        if c.weighting == "none" or c.num_neighbors <= 1 or len(nn) < 2:
            return 1.0
        _, nb = nn.search(data[m_idx][None], min(c.num_neighbors, len(nn)))
        nb = [int(j) for j in nb[0] if int(j) != m_idx]
        if c.weighting == "patchcore":
            support = data[[m_idx] + nb[: c.num_neighbors - 1]]
            return patchcore_weight(p_star, support)
        others = data[nb[: c.num_neighbors - 1]]
        r = exdd_ratio(p_star, s_star, others, tau=math.sqrt(data.shape[1]))
        return 1.0 - r if bank == "normal" else r

    def _image_score(self, rows: np.ndarray, dn: np.ndarray, inn: np.ndarray,
                     dp: np.ndarray | None, ip: np.ndarray | None) -> float:
        c = self.config
        j = int(np.argmax(dn))
        s_neg = float(dn[j]) * self._bank_weight("normal", rows[j], float(dn[j]), int(inn[j]))
        if dp is None:
            return s_neg
        jp = int(np.argmax(dp))
        s_pos = float(dp[jp]) * self._bank_weight("defect", rows[jp], float(dp[jp]), int(ip[jp]))
        return s_neg / (s_pos + c.eps)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """One file (torch format, loads with ``weights_only=True``) with the format
        version, defectforge version, config, input size, banks and thresholds. The
        backbone weights are not stored: they are rebuilt from the config on load."""
        self._check_fitted()
        import torch

        from defectforge.detect.persist import write_model_file

        cfg = self.get_params()
        cfg["layers"] = list(cfg["layers"]) if cfg["layers"] is not None else None
        cfg["image_size"] = list(cfg["image_size"]) if isinstance(cfg["image_size"], tuple) else cfg["image_size"]
        obj = {
            "kind": _MODEL_KIND,
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "config": cfg,
            "input_size": list(self.input_size),
            "grid": list(self.grid),
            "feature_dim": int(self.feature_dim),
            "bank_normal": torch.from_numpy(self.bank_normal),
            "bank_defect": torch.from_numpy(self.bank_defect),
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "fit_info": dict(self.fit_info),
        }
        return write_model_file(path, obj)

    @classmethod
    def load(cls, path: str | Path, progress: bool = False) -> "ExDD":
        """A fitted model from :meth:`save`; the class stored in the file is returned
        (``ExDD.load`` of a PatchCore file gives a :class:`PatchCore`)."""
        from defectforge.detect.persist import read_model_file

        path = Path(path)
        obj = read_model_file(path, _MODEL_KIND, FORMAT_VERSION, "model")
        try:
            klass = {"ExDD": ExDD, "PatchCore": PatchCore}[obj["class"]]
            cfg = dict(obj["config"])
            model = klass.__new__(klass)
            ExDD.__init__(model, progress=progress, **cfg)
            model.input_size = tuple(int(v) for v in obj["input_size"])
            model.grid = tuple(int(v) for v in obj["grid"])
            model.feature_dim = int(obj["feature_dim"])
            model.bank_normal = obj["bank_normal"].numpy().astype(np.float32, copy=False)
            model.bank_defect = obj["bank_defect"].numpy().astype(np.float32, copy=False)
            model.threshold = obj["threshold"]
            model.pixel_threshold = obj["pixel_threshold"]
            model.fit_info = dict(obj.get("fit_info", {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(path, f"model file is incomplete ({exc.__class__.__name__}: {exc})") from None
        from defectforge.detect.knn import NearestNeighbors
        from defectforge.detect.model_checks import check_finite_state, check_input_size

        check_input_size(path, model.input_size)
        check_finite_state(path, {"bank_normal": model.bank_normal, "bank_defect": model.bank_defect},
                           {"threshold": model.threshold, "pixel_threshold": model.pixel_threshold})

        model._nn_normal = NearestNeighbors(model.bank_normal, model.config.nn_backend)
        model._nn_defect = (NearestNeighbors(model.bank_defect, model.config.nn_backend)
                            if len(model.bank_defect) else None)
        _ = model.extractor  # rebuild the backbone now: a missing weights file fails at load time
        if model.bank_normal.shape[1] != model.feature_dim:
            raise InputError(path, "bank width does not match the recorded feature dimension")
        return model


@register_detector("patchcore")
class PatchCore(ExDD):
    """PatchCore (Roth et al. 2022): ExDD's one-bank case with PatchCore's defaults.

    Re-weighted max over b=9 neighbours, 10 % coreset of the normal rows. Defect images
    passed to :meth:`fit` never enter a bank; they join the validation split for the
    F1 threshold.
    """

    name = "patchcore"
    _defaults = {"weighting": "patchcore", "num_neighbors": 9, "normal_ratio": 0.1, "defects_for": "validation"}
