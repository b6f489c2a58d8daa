"""ExDD (explicit dual memory bank) with PatchCore as its one-bank case.

A frozen backbone turns each image into a grid of locally aware patch rows
(:mod:`~defectforge.bank.features`). The **normal bank** M- is a greedy k-center
coreset (~1 %) of the rows of defect-free training images; the **defect bank** M+ a
coreset (~10 %) of the rows that lie *inside defect masks* of real and/or synthetic
defect images. A test patch is anomalous when it is far from M- and close to M+:

- pixel map: ``d-(p) / (d+(p) + eps)`` per patch (``d-(p)`` alone without M+), upsampled
  to the input size, Gaussian-smoothed (sigma 4), resized to the image's own size;
- image score (:mod:`~defectforge.detect.image_score`): the paper's ``w- s-* / (w+ s+* + eps)``
  with ExDD's neighbourhood-aware weights (k=3) or PatchCore's re-weighted max
  (``"weighted"``), the max of the map (``"max"``), the top-k mean of the ratio map
  (``"topk"``), a fusion of the nearest-normal score and the ratio map calibrated on
  validation (``"fusion"``), or (the default, ``"auto"``) the one of these with the best
  validation AUROC.

With an empty defect bank every formula reduces to PatchCore, through the same code path;
:class:`PatchCore` is this class with PatchCore's defaults (weighting over b=9
neighbours, 10 % coreset) that uses defect images, when given, only for validation.

Fitting carves a seeded validation split from the normal training images (never test
data); for ``image_score="auto"|"fusion"`` it also holds ``defect_val_fraction`` of the real
defect images out of the defect bank (when that is at least 2 images). It scores that split,
chooses the image score (``fit_info_["image_score"]``) and stores the image and pixel
thresholds in the model.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from defectforge.detect.base import Detector, Prediction, register_detector
from defectforge.errors import ConfigError, InputError



class EmptyDefectMaskWarning(UserWarning):
    """A defect image without mask pixels (or without a mask) was skipped for the defect bank."""


def _torch_device(name: str):
    """``torch.device(name)``; a clear error when CUDA is asked for but not available."""
    import torch

    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch sees no CUDA device")
    return torch.device(name)


@register_detector("exdd")
class ExDD(Detector):
    """ExDD dual-memory-bank detector (scikit-learn estimator shape).

    Every parameter is an ``__init__`` argument (checked at :meth:`fit`). ``image_size``
    as an int is the shorter side; the longer one keeps the aspect ratio of the first
    training image (rounded to a multiple of 8) and the resulting ``(H, W)`` is fixed in
    the model (``input_size_``), so all later images are resized to it. ``layers=None``
    taps the backbone's default stages (the resolved names are ``layers_`` after fit).
    ``progress`` (a run-time setting, not stored in the model file): ``True`` shows rich
    progress bars on stderr, a callable receives ``(stage, done, total)``. ``device``
    (run-time too): ``"cpu"`` or ``"cuda[:N]"`` for the backbone and the nearest-neighbour
    search (the coreset choice always runs on the CPU, exact).

    Fitted attributes: ``input_size_``, ``grid_``, ``feature_dim_``, ``layers_``,
    ``bank_normal_``, ``bank_defect_``, ``threshold_``, ``pixel_threshold_``, ``fit_info_``,
    ``image_score_`` (the image score in use: ``image_score`` itself, or what ``"auto"`` chose;
    ``fit_info_["image_score"]`` holds the validation AUROCs and the fusion calibration).
    """

    fitted_marker = "bank_normal_"
    #: run-time settings, never stored in the model file (a GPU-fitted model loads on a CPU)
    runtime_params = ("progress", "device")

    def __init__(self, backbone: str = "efficientnet_lite0", layers: tuple[str, ...] | None = None,
                 weights: str | None = None, random_init: bool = False, image_size: int | tuple[int, int] = 256,
                 upsample: str = "bilinear", normal_ratio: float = 0.01, defect_ratio: float = 0.10,
                 coreset_min: int = 0, projection_dim: int | None = 128, weighting: str = "exdd",
                 num_neighbors: int = 3, image_score: str = "auto", topk_fraction: float = 0.01,
                 defect_val_fraction: float = 0.2, eps: float = 1e-6, sigma: float = 4.0,
                 map_upsample: str = "bilinear", mask_fraction: float = 0.5, val_fraction: float = 0.1,
                 threshold_quantile: float = 0.99, pixel_quantile: float = 0.999, defects_for: str = "bank",
                 batch_size: int = 4, nn_backend: str = "faiss", seed: int = 0, progress: Any = False,
                 device: str = "cpu"):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.random_init = random_init
        self.image_size = image_size
        self.upsample = upsample
        self.normal_ratio = normal_ratio
        self.defect_ratio = defect_ratio
        self.coreset_min = coreset_min
        self.projection_dim = projection_dim
        self.weighting = weighting
        self.num_neighbors = num_neighbors
        self.image_score = image_score
        self.topk_fraction = topk_fraction
        self.defect_val_fraction = defect_val_fraction
        self.eps = eps
        self.sigma = sigma
        self.map_upsample = map_upsample
        self.mask_fraction = mask_fraction
        self.val_fraction = val_fraction
        self.threshold_quantile = threshold_quantile
        self.pixel_quantile = pixel_quantile
        self.defects_for = defects_for
        self.batch_size = batch_size
        self.nn_backend = nn_backend
        self.seed = seed
        self.progress = progress
        self.device = device
        self._extractor = self._extractor_key = None
        self._nn_normal = None
        self._nn_defect = None
        self._fusion = self._score_info = None

    # ------------------------------------------------------------------ params
    @property
    def config(self) -> SimpleNamespace:
        """A read-only snapshot of the parameters, normalised (``layers``/``image_size``
        lists become tuples, ``weights`` a string)."""
        p = self.get_params()
        if p["layers"] is not None:
            p["layers"] = tuple(p["layers"])
        if isinstance(p["image_size"], list):
            p["image_size"] = tuple(p["image_size"])
        if p["weights"] is not None:
            p["weights"] = str(p["weights"])
        return SimpleNamespace(**p)

    def _validate_params(self) -> None:
        c = self.config
        if c.weighting not in ("exdd", "patchcore", "none"):
            raise ConfigError(f"weighting must be exdd|patchcore|none, got {c.weighting!r}")
        from defectforge.detect.image_score import IMAGE_SCORES

        if c.image_score not in IMAGE_SCORES:
            raise ConfigError(f"image_score must be {'|'.join(IMAGE_SCORES)}, got {c.image_score!r}")
        if not 0.0 < c.topk_fraction <= 1.0 or not 0.0 <= c.defect_val_fraction < 1.0:
            raise ConfigError(f"topk_fraction must be in (0, 1] and defect_val_fraction in [0, 1), got "
                              f"{c.topk_fraction} and {c.defect_val_fraction}")
        if c.upsample not in ("bilinear", "nearest") or c.map_upsample not in ("bilinear", "nearest"):
            raise ConfigError("upsample / map_upsample must be 'bilinear' or 'nearest'")
        if c.defects_for not in ("bank", "validation"):
            raise ConfigError(f"defects_for must be 'bank' or 'validation', got {c.defects_for!r}")
        for name in ("normal_ratio", "defect_ratio"):
            v = getattr(c, name)
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {v}")
        if not 0.0 <= c.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {c.val_fraction}")
        if not 0.0 < c.mask_fraction <= 1.0:
            raise ConfigError(f"mask_fraction must be in (0, 1], got {c.mask_fraction}")
        if c.num_neighbors < 1 or c.batch_size < 1:
            raise ConfigError("num_neighbors and batch_size must be >= 1")
        if c.eps <= 0:
            raise ConfigError(f"eps must be > 0, got {c.eps}")
        if not (c.device == "cpu" or str(c.device).startswith("cuda")):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {c.device!r}")
        if isinstance(c.image_size, tuple):
            if len(c.image_size) != 2 or min(c.image_size) < 16:
                raise ConfigError(f"image_size must be an int or (H, W) >= 16, got {c.image_size}")
        elif int(c.image_size) < 16:
            raise ConfigError(f"image_size must be >= 16, got {c.image_size}")

    # ------------------------------------------------------------------ backbone
    @property
    def extractor(self):
        """The frozen backbone (built on first use, rebuilt when its parameters change)."""
        c = self.config
        key = (c.backbone, c.layers, c.weights, c.random_init, c.seed, c.device)
        if self._extractor is None or self._extractor_key != key:
            import torch

            from defectforge.bank.backbone import build_extractor

            ex, _ = build_extractor(c.backbone, c.layers, c.weights, c.random_init, seed=c.seed)
            ex = ex.to(_torch_device(c.device), memory_format=torch.channels_last)
            self._extractor, self._extractor_key = ex, key
            self.layers_ = tuple(ex.layers)
        return self._extractor

    def _rows(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Patch rows ``(B*h*w, C)`` of a batch of RGB uint8 images at the input size."""
        import torch

        from defectforge.bank.features import embed, to_rows, to_tensor

        ex = self.extractor
        x = to_tensor(images, self.input_size_, ex.mean, ex.std).to(_torch_device(self.config.device))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            emb = embed(ex(x), self.config.upsample).cpu()
        self.grid_ = (int(emb.shape[2]), int(emb.shape[3]))
        return to_rows(emb)

    def _setup_size(self, first_rgb: np.ndarray) -> None:
        import torch

        from defectforge.bank.features import embed, input_size_for

        s = self.config.image_size
        self.input_size_ = tuple(int(v) for v in s) if isinstance(s, (tuple, list)) else input_size_for(first_rgb.shape[:2], int(s))
        with torch.inference_mode():
            x = torch.zeros(1, 3, *self.input_size_, device=_torch_device(self.config.device))
            emb = embed(self.extractor(x), self.config.upsample)
        self.grid_ = (int(emb.shape[2]), int(emb.shape[3]))
        self.feature_dim_ = int(emb.shape[1])

    # ------------------------------------------------------------------ fit
    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | dict[str, Iterable[Any]] | None = None) -> "ExDD":
        """Build the banks from defect-free ``normal`` images and (ExDD) the masked
        regions of ``defects`` (``Sample`` s with masks, or ``(image, mask)`` pairs), then
        choose thresholds on a validation split carved from ``normal``.

        ``defects`` may also be a dict ``{set name: items}`` (e.g. the train split's real
        defects and one or more synthetic sets); ``fit_info["defect_sets"]`` then records,
        per set, how many images it had and how many put rows in the defect bank.

        Memory: only the rows projected for the coreset choice stay in memory; the full
        rows wait in a temporary file and only the chosen ones are read back."""
        import time

        from defectforge.bank.features import random_projection, to_rgb

        self._validate_params()
        c = self.config
        normal = list(normal)
        if isinstance(defects, dict):
            def_sets = {str(k): list(v) for k, v in defects.items()}
        else:
            def_sets = {"defects": list(defects)} if defects is not None else {}
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
        D = self.feature_dim_
        proj = None
        if c.projection_dim is not None and c.projection_dim < D:
            proj = random_projection(D, int(c.projection_dim), c.seed)

        t0 = time.perf_counter()
        self.bank_normal_, n_rows, t1 = self._bank_from(
            "normal", ((first if k == 0 else it, None) for k, it in enumerate(train_items)), len(train_items),
            proj, c.normal_ratio)
        t2 = time.perf_counter()

        # ---- defect bank (ExDD) or defect validation images (PatchCore)
        val_defects: list[Any] = []
        self.bank_defect_ = np.zeros((0, D), dtype=np.float32)
        set_info = []
        held: dict[str, int] = {}
        score_why = None
        if def_sets and c.defects_for == "bank" and val_items:
            from defectforge.detect.image_score import NEED_VALIDATION, hold_out_real_defects

            if c.image_score in NEED_VALIDATION:
                def_sets, val_defects, held, score_why = hold_out_real_defects(def_sets, c.defect_val_fraction, c.seed)
        if def_sets and c.defects_for == "bank":
            tagged = [(it, name) for name, items in def_sets.items() for it in items]
            used: dict[str, int] = {name: 0 for name in def_sets}
            self.bank_defect_, n_drows, _ = self._bank_from("defect", iter(tagged), len(tagged), proj, c.defect_ratio,
                                                           used=used)
            if n_drows == 0:
                warnings.warn("no defect image contributed rows: the defect bank is empty (PatchCore behaviour)",
                              EmptyDefectMaskWarning, stacklevel=2)
            set_info = [{"name": k, "images": len(v) + held.get(k, 0), "in_bank": used[k], "use": "bank",
                         "validation": held.get(k, 0)} for k, v in def_sets.items()]
        elif def_sets:
            # (image, mask) pairs are scored by their image
            val_defects = [d[0] if isinstance(d, (tuple, list)) else d for items in def_sets.values() for d in items]
            set_info = [{"name": k, "images": len(v), "in_bank": 0, "use": "validation"} for k, v in def_sets.items()]
        t3 = time.perf_counter()
        from defectforge.detect.model_checks import check_finite_state

        check_finite_state(c.weights, {"bank_normal": self.bank_normal_, "bank_defect": self.bank_defect_},
                           cause="the backbone produced non-finite features (corrupt --weights?)")
        self._make_indexes()

        # ---- thresholds on validation (never test)
        self.threshold_ = self.pixel_threshold_ = None
        n_val_def = 0
        if val_items:
            self._choose_thresholds(val_items, val_defects, score_why)
            n_val_def = len(val_defects)
        else:
            self._choose_image_score(None, None, "val_fraction=0: no validation split")
            warnings.warn("val_fraction=0: no validation split, so no threshold is chosen; "
                          "pred_label / pred_mask will be all False", UserWarning, stacklevel=2)
        self.fit_info_ = {
            "n_train_normal": len(train_items), "n_val_normal": len(val_items), "n_val_defect": n_val_def,
            "n_defect_images_in_bank": int(sum(x["in_bank"] for x in set_info)), "defect_sets": set_info,
            "n_rows_normal": int(n_rows),
            "bank_normal": int(len(self.bank_normal_)), "bank_defect": int(len(self.bank_defect_)),
            "feature_dim": D, "grid": list(self.grid_), "input_size": list(self.input_size_),
            "seconds_features": round(t1 - t0, 3), "seconds_coreset": round(t2 - t1, 3),
            "seconds_defect_bank": round(t3 - t2, 3), "image_score": self._score_info,
        }
        return self

    def _bank_from(self, which: str, items: Iterator[tuple[Any, Any]], n_items: int, proj: np.ndarray | None,
                   ratio: float, used: dict[str, int] | None = None) -> tuple[np.ndarray, int, float]:
        """``(bank rows, rows seen, time features ended)`` for the normal or the defect
        bank: features batch by batch (full rows spooled to disk, projected rows kept),
        then the greedy k-center coreset on the projected rows. ``items`` yields
        ``(item, tag)``; defect items go through :meth:`_defect_rows` and ``used[tag]``
        counts the ones that gave rows."""
        import time

        from defectforge.bank.coreset import coreset_size, greedy_kcenter
        from defectforge.detect.fit_job import feature_rows
        from defectforge.progress import progress_task
        from defectforge.bank.spool import RowSpool

        c = self.config
        D = self.feature_dim_
        sel_dim = proj.shape[1] if proj is not None else D
        sel_parts: list[np.ndarray] = []
        # the normal rows' count is known: fill one array (no second copy at the end)
        sel_all = (np.empty((n_items * self.grid_[0] * self.grid_[1], sel_dim), np.float32)
                   if which == "normal" else None)
        with RowSpool(D) as spool:
            with progress_task(f"features ({which})", n_items, self.progress) as bar:
                # batches of images -> rows, in order, in this process or on an engine (fit_job)
                for rows, n_batch, tag in feature_rows(self, which, items, c.batch_size):
                    bar.advance(n_batch)
                    if rows is None:
                        continue
                    if used is not None:
                        used[tag] += 1
                    if sel_all is not None:
                        dst = sel_all[spool.n_rows:spool.n_rows + len(rows)]
                        if proj is not None:
                            np.matmul(rows, proj, out=dst)
                        else:
                            dst[:] = rows
                    else:
                        sel_parts.append(rows @ proj if proj is not None else rows)
                    spool.append(rows)
            t_feat = time.perf_counter()
            n_rows = spool.n_rows
            if n_rows == 0:
                return np.zeros((0, D), np.float32), 0, t_feat
            sel = sel_all[:n_rows] if sel_all is not None else np.concatenate(sel_parts)
            del sel_parts, sel_all
            target = coreset_size(n_rows, ratio, c.coreset_min)
            with progress_task(f"coreset ({which} bank)", target, self.progress) as bar:
                idx = greedy_kcenter(sel, target, seed=c.seed, progress=bar.update, overwrite_x=True)
            del sel
            return np.ascontiguousarray(spool.gather(np.sort(idx))), n_rows, t_feat

    def _make_indexes(self) -> None:
        from defectforge.bank.knn import NearestNeighbors

        c = self.config
        self._nn_normal = NearestNeighbors(self.bank_normal_, c.nn_backend, device=c.device)
        self._nn_defect = (NearestNeighbors(self.bank_defect_, c.nn_backend, device=c.device)
                           if len(self.bank_defect_) else None)

    def _defect_rows(self, item: Any, k: int) -> np.ndarray | None:
        """Rows of one defect image whose grid cell is at least ``mask_fraction`` defect."""
        from defectforge.data.sample import Sample
        from defectforge.bank.features import mask_to_grid, to_rgb

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
        frac = mask_to_grid(mask, self.grid_).reshape(-1)
        keep = frac >= self.config.mask_fraction
        if not keep.any():  # a defect smaller than one cell: keep its best-covered cell(s)
            keep = frac >= frac.max() - 1e-9
        return rows[keep]

    def _choose_image_score(self, raw: dict[str, np.ndarray] | None, labels: np.ndarray | None,
                            why: str | None) -> None:
        from defectforge.detect.image_score import choose

        info = choose(self.config.image_score, raw, labels, seed=self.config.seed, reason=why)
        if info["chosen"] == "fusion" and info["fusion"] is None:
            raise ConfigError("image_score='fusion' is calibrated on validation defect images, and there are none: "
                              + (why or "pass real defect images") + "; use 'auto' or another image score")
        self._score_info = info
        self.image_score_, self._fusion = info["chosen"], info["fusion"]

    def _choose_thresholds(self, val_items: list[Any], val_defects: list[Any], why: str | None = None) -> None:
        from defectforge.detect.image_score import final_scores
        from defectforge.metrics import select_threshold

        self.threshold_ = float("inf")
        self.pixel_threshold_ = float("inf")
        raw, maps = self._score(val_items + val_defects, keep_input_maps=True)
        labels = np.array([False] * len(val_items) + [True] * len(val_defects))
        self._choose_image_score(raw, labels, why)
        scores = final_scores(self.image_score_, raw, self._fusion)
        method = "f1" if val_defects else "quantile"
        self.threshold_ = float(select_threshold(labels, scores, method=method, quantile=self.config.threshold_quantile))
        normal_px = np.concatenate([m.reshape(-1) for m, lab in zip(maps, labels) if not lab])
        self.pixel_threshold_ = float(np.quantile(normal_px, self.config.pixel_quantile))

    # ------------------------------------------------------------------ predict
    def predict(self, images: Iterable[Any]) -> Prediction:
        """Scores, maps (at each image's own size), labels and masks for ``images``: image
        paths, folders, glob patterns, ``Sample`` s, PIL images or H x W [x C] arrays of any
        size, one or a list (see :func:`defectforge.data.inputs.as_items`)."""
        self._check_fitted()
        import cv2

        from defectforge.data.inputs import as_items

        from defectforge.detect.image_score import final_scores

        items = as_items(images)
        raw, maps, shapes = self._score(items, keep_input_maps=True, return_shapes=True)
        scores = final_scores(self.image_score_, raw, self._fusion)
        out_maps = []
        for m, (H, W) in zip(maps, shapes):
            out_maps.append(m if m.shape == (H, W) else cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR))
        thr = self.threshold_ if self.threshold_ is not None else float("inf")
        pthr = self.pixel_threshold_ if self.pixel_threshold_ is not None else float("inf")
        pred = Prediction(
            pred_score=scores.astype(np.float64),
            anomaly_map=out_maps,
            pred_label=scores >= thr,
            pred_mask=[m >= pthr for m in out_maps],
        )
        pred.inputs, pred.pixel_threshold = items, self.pixel_threshold_  # for pred[i].plot()
        return pred

    def _score(self, items: list[Any], keep_input_maps: bool = True, return_shapes: bool = False):
        """Raw image scores (:func:`~defectforge.detect.image_score.raw_scores`, name ->
        array) and maps at the model input size for ``items``."""
        from defectforge.detect.image_score import raw_scores
        from defectforge.progress import progress_task
        from defectforge.bank.features import to_rgb
        from defectforge.detect.scoring import patch_maps_to_input

        c = self.config
        h, w = self.grid_
        per = h * w
        rows_out: list[dict[str, float]] = []
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
                full = patch_maps_to_input(patch.reshape(len(rgbs), h, w), self.input_size_, c.map_upsample, c.sigma)
                rows3 = rows.reshape(len(rgbs), per, -1)
                for b in range(len(rgbs)):
                    ws = self._image_score(rows3[b], dn[b], inn[b], None if dp is None else dp[b],
                                          None if ip is None else ip[b])
                    rows_out.append(raw_scores(full[b], patch[b], dn[b], ws, c.topk_fraction))
                    if keep_input_maps:
                        maps.append(full[b])
                bar.advance(len(rgbs))
        names = ("weighted", "max", "patch_max", "topk", "nn_max")
        scores = {n: np.array([r[n] for r in rows_out], np.float64) for n in names}
        if return_shapes:
            return scores, maps, shapes
        return scores, maps

    def _bank_weight(self, bank: str, p_star: np.ndarray, s_star: float, m_idx: int) -> float:
        """Weight of one bank's max-min distance (see :mod:`~defectforge.detect.scoring`)."""
        from defectforge.detect.scoring import exdd_ratio, patchcore_weight

        c = self.config
        nn = self._nn_normal if bank == "normal" else self._nn_defect
        data = self.bank_normal_ if bank == "normal" else self.bank_defect_
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
    # The model file (defectforge.estimator) stores the parameters, the input size, the
    # banks and the thresholds; the backbone weights are rebuilt from the parameters.
    def _get_state(self) -> dict[str, Any]:
        import torch

        return {"layers": list(self.layers_), "input_size": list(self.input_size_), "grid": list(self.grid_),
                "feature_dim": int(self.feature_dim_), "bank_normal": torch.from_numpy(self.bank_normal_),
                "bank_defect": torch.from_numpy(self.bank_defect_), "threshold": self.threshold_,
                "pixel_threshold": self.pixel_threshold_, "fit_info": dict(self.fit_info_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        from defectforge.detect.model_checks import check_finite_state, check_input_size

        self.layers_ = tuple(state["layers"])
        self.input_size_ = tuple(int(v) for v in state["input_size"])
        self.grid_ = tuple(int(v) for v in state["grid"])
        self.feature_dim_ = int(state["feature_dim"])
        self.bank_normal_ = state["bank_normal"].numpy().astype(np.float32, copy=False)
        self.bank_defect_ = state["bank_defect"].numpy().astype(np.float32, copy=False)
        self.threshold_ = state["threshold"]
        self.pixel_threshold_ = state["pixel_threshold"]
        self.fit_info_ = dict(state.get("fit_info", {}))
        from defectforge.detect.image_score import NEED_VALIDATION

        info = self.fit_info_.get("image_score")  # absent in older model files: their score was not chosen
        p = self.config.image_score
        self.image_score_ = info["chosen"] if info else ("weighted" if p in NEED_VALIDATION else p)
        self._fusion = info["fusion"] if info else None
        if self.bank_normal_.ndim != 2 or self.bank_normal_.shape[1] != self.feature_dim_:
            raise ValueError("bank width does not match the recorded feature dimension")
        # a tampered or corrupt file: refused before any allocation or scoring (the loader names the file)
        check_input_size(None, self.input_size_)
        check_finite_state(None, {"bank_normal": self.bank_normal_, "bank_defect": self.bank_defect_},
                           {"threshold": self.threshold_, "pixel_threshold": self.pixel_threshold_})
        self._make_indexes()
        _ = self.extractor  # rebuild the backbone now: a missing weights file fails at load time


def _patchcore_init(base_init, overrides: dict[str, Any]):
    """``base_init`` with other defaults, keeping an explicit signature (so get_params,
    clone and the model file see PatchCore's own defaults)."""
    import functools
    import inspect

    sig = inspect.signature(base_init)

    @functools.wraps(base_init)
    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(sig.parameters))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s) {unknown}")
        base_init(self, **{**overrides, **params})

    __init__.__signature__ = sig.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(default=overrides[p.name]) if p.name in overrides else p for p in sig.parameters.values()])
    return __init__


@register_detector("patchcore")
class PatchCore(ExDD):
    """PatchCore (Roth et al. 2022): ExDD's one-bank case with PatchCore's defaults.

    Re-weighted max over b=9 neighbours, 10 % coreset of the normal rows. Defect images
    passed to :meth:`fit` never enter a bank; they join the validation split for the
    F1 threshold.
    """

    __init__ = _patchcore_init(ExDD.__init__, {"weighting": "patchcore", "num_neighbors": 9, "normal_ratio": 0.1,
                                               "defects_for": "validation", "image_score": "weighted"})
