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
data). For ``image_score="auto"|"fusion"`` the real defect images validate too:
``defect_val="crossfit"`` (default) cuts them into ``round(1 / defect_val_fraction)`` folds and
scores each fold against a defect bank built without it (out of fold), while the model's bank
keeps them all; ``defect_val="holdout"`` holds ``defect_val_fraction`` of them out of the bank.
``defect_val_split`` (``auto``, ``group``, ``image``; :mod:`defectforge.data.splits`) says how
they are cut: with ``auto`` whole groups (``meta["group"]``, e.g. one wear sequence of
near-duplicate photos) go to one fold where every real defect image has a group, so no image is
scored by a bank holding a near-copy of it; model files written before the option load with
``image``, the cut they were fitted with. (The normal validation images are drawn by image.)
It scores that split, chooses the image score (``fit_info_["image_score"]``) and stores the
image and pixel thresholds in the model.

The class is assembled from modules named for what they do: this one holds the parameters,
the backbone and the model-file state; :mod:`~defectforge.detect.exdd_fit` the fitting
(banks, validation split, thresholds); :mod:`~defectforge.detect.exdd_predict` the scoring
and ``predict``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from defectforge.detect.base import Detector, register_detector
from defectforge.detect.exdd_fit import BankFitMixin
from defectforge.detect.exdd_predict import PatchScoreMixin
from defectforge.errors import ConfigError


class EmptyDefectMaskWarning(UserWarning):
    """A defect image without mask pixels (or without a mask) was skipped for the defect bank."""


def _torch_device(name: str):
    """``torch.device(name)`` after the one device check (:func:`defectforge._device.resolve_device`)."""
    import torch

    from defectforge._device import resolve_device

    return torch.device(resolve_device(name))


@register_detector("exdd")
class ExDD(BankFitMixin, PatchScoreMixin, Detector):
    """ExDD dual-memory-bank detector (scikit-learn estimator shape).

    Every parameter is an ``__init__`` argument (checked at :meth:`fit`). ``image_size``
    as an int is the shorter side; the longer one keeps the aspect ratio of the first
    training image (rounded to a multiple of 8) and the resulting ``(H, W)`` is fixed in
    the model (``input_size_``), so all later images are resized to it. ``layers=None``
    taps the backbone's default stages (the resolved names are ``layers_`` after fit).
    ``progress`` (a run-time setting, not stored in the model file): ``"auto"`` (default)
    shows rich progress bars on stderr in an interactive session (the REPL, IPython,
    Jupyter) and nothing in scripts, ``True`` always, ``False`` never, a callable receives
    ``(stage, done, total)``. ``device``
    (run-time too): ``"cpu"`` or ``"cuda[:N]"`` for the backbone and the nearest-neighbour
    search (the coreset choice always runs on the CPU, exact).
    ``coreset_max``: the most rows a bank keeps (default 16,384 for ExDD, 163,840 for
    PatchCore: both reached at 1,638,400 rows, about 650 images at the default size);
    past it the bank stops growing with the images, so the fit's cost grows linearly and
    predict's per image stays flat (the choice stays exact: the first ``coreset_max`` rows
    of the uncapped greedy order). ``None`` (or ``0``): no cap, the ratio alone (model files written before
    the cap load as ``None``).
    ``synthetic_filter`` (ExDD): a synthetic defect-bank row is kept only when its distance to
    the normal bank is at least this quantile (default 0.99) of the distances of the
    validation split's normal patches to it: a row that a normal patch could be is not
    evidence of a defect, and in the bank it would raise the ratio ``d- / d+`` of normal
    patches that resemble it. Only synthetic rows (sets named ``synthetic*`` or samples with
    ``meta["generator"]``) are filtered; real annotations are kept as given; ``None`` keeps
    every row (model files written before the option load as ``None``).
    ``coreset_chunk`` (opt-in, approximate): ``0`` (default) makes one exact greedy choice
    over all normal rows; ``N > 0`` makes it per chunk of about ``N`` training images,
    chosen while the features run, so fit time and memory grow linearly with the images
    (:mod:`defectforge.bank.chunked`; its effect on the metrics: ``docs/bench/scale_chunked.md``).
    ``nn_backend``: the nearest-neighbour search (:mod:`defectforge.bank.knn`); ``"auto"``
    (default) and every other name is exact, except the opt-in ``"ivf"`` / ``"ivf:N"``
    (approximate: each patch searches only its N nearest bank clusters; its effect on the
    metrics: ``docs/detectors.md``). Stored in the model file; ``set_params`` changes it.

    Fitted attributes: ``input_size_``, ``grid_``, ``feature_dim_``, ``layers_``,
    ``bank_normal_``, ``bank_defect_``, ``threshold_``, ``pixel_threshold_``, ``fit_info_``,
    ``image_score_`` (the image score in use: ``image_score`` itself, or what ``"auto"`` chose;
    ``fit_info_["image_score"]`` holds the validation AUROCs and the fusion calibration).
    """

    fitted_marker = "bank_normal_"
    #: run-time settings, never stored in the model file (a GPU-fitted model loads on a CPU)
    runtime_params = ("progress", "device")
    #: parameters added later: the value that model files written without them were fitted with
    legacy_params = {"defect_val_split": "image", "coreset_max": None, "synthetic_filter": None}

    def __init__(self, backbone: str = "efficientnet_lite0", layers: tuple[str, ...] | None = None,
                 weights: str | None = None, random_init: bool = False, image_size: int | tuple[int, int] = 256,
                 upsample: str = "bilinear", normal_ratio: float = 0.01, defect_ratio: float = 0.10,
                 coreset_min: int = 0, coreset_max: int | None = 16384, coreset_chunk: int = 0, projection_dim: int | None = 128, weighting: str = "exdd",
                 num_neighbors: int = 3, image_score: str = "auto", topk_fraction: float = 0.01,
                 defect_val_fraction: float = 0.2, defect_val: str = "crossfit",
                 defect_val_split: str = "auto", eps: float = 1e-6, sigma: float = 4.0,
                 map_upsample: str = "bilinear", mask_fraction: float = 0.5, val_fraction: float = 0.1,
                 threshold_quantile: float = 0.99, pixel_quantile: float = 0.999, defects_for: str = "bank",
                 synthetic_filter: float | None = 0.99, batch_size: int = 4, nn_backend: str = "auto", seed: int = 0,
                 progress: Any = "auto", device: str = "cpu"):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.random_init = random_init
        self.image_size = image_size
        self.upsample = upsample
        self.normal_ratio = normal_ratio
        self.defect_ratio = defect_ratio
        self.coreset_min = coreset_min
        self.coreset_max = coreset_max
        self.coreset_chunk = coreset_chunk
        self.projection_dim = projection_dim
        self.weighting = weighting
        self.num_neighbors = num_neighbors
        self.image_score = image_score
        self.topk_fraction = topk_fraction
        self.defect_val_fraction = defect_val_fraction
        self.defect_val = defect_val
        self.defect_val_split = defect_val_split
        self.eps = eps
        self.sigma = sigma
        self.map_upsample = map_upsample
        self.mask_fraction = mask_fraction
        self.val_fraction = val_fraction
        self.threshold_quantile = threshold_quantile
        self.pixel_quantile = pixel_quantile
        self.defects_for = defects_for
        self.synthetic_filter = synthetic_filter
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
        if c.defect_val not in ("crossfit", "holdout"):
            raise ConfigError(f"defect_val must be 'crossfit' or 'holdout', got {c.defect_val!r}")
        from defectforge.data.splits import VAL_SPLITS

        if c.defect_val_split not in VAL_SPLITS:
            raise ConfigError(f"defect_val_split must be one of {', '.join(VAL_SPLITS)}, got {c.defect_val_split!r}")
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
        sf = c.synthetic_filter
        if sf is not None and (isinstance(sf, bool) or not isinstance(sf, (int, float, np.floating))
                               or not 0.0 <= float(sf) < 1.0):
            raise ConfigError(f"synthetic_filter must be None or a quantile in [0, 1), got {sf!r}")
        if not 0.0 < c.mask_fraction <= 1.0:
            raise ConfigError(f"mask_fraction must be in (0, 1], got {c.mask_fraction}")
        cmax = c.coreset_max
        if cmax is not None and (isinstance(cmax, bool) or not isinstance(cmax, (int, np.integer)) or cmax < 0):
            raise ConfigError(f"coreset_max must be None or an int >= 0 (0 or None: no cap), got {cmax!r}")
        if cmax and c.coreset_min > cmax:
            raise ConfigError(f"coreset_min ({c.coreset_min}) must not exceed coreset_max ({cmax})")
        if isinstance(c.coreset_chunk, bool) or not isinstance(c.coreset_chunk, (int, np.integer)) or c.coreset_chunk < 0:
            raise ConfigError(f"coreset_chunk must be an int >= 0 (0: one exact choice), got {c.coreset_chunk!r}")
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
        dev = _torch_device(self.config.device)
        x = to_tensor(images, self.input_size_, ex.mean, ex.std).to(dev)
        x = x.contiguous(memory_format=torch.channels_last)
        # on the CPU one image per forward pass: ~1.5x faster per image at the default 256x632 on
        # 2 cores than 4 at once (activations stay in cache), the same rows there bit for bit (other
        # shapes: up to float rounding, oneDNN may choose other kernels; docs/bench/scale.md)
        step = len(x) if dev.type == "cuda" else 1
        with torch.inference_mode():
            emb = torch.cat([embed(ex(x[i:i + step]), self.config.upsample).cpu() for i in range(0, len(x), step)])
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
        from defectforge.detect.model_checks import check_finite_state, check_grid, check_input_size, check_params

        self.layers_ = tuple(state["layers"])
        self.input_size_ = tuple(int(v) for v in state["input_size"])
        self.grid_ = state["grid"]  # checked below
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
        if len(self.bank_normal_) == 0:  # a fit never writes one: nothing could be scored against it
            from defectforge.errors import InputError

            raise InputError(None, "the normal memory bank is empty; the model file is corrupt")
        # a tampered or corrupt file: refused before any allocation or scoring (the loader names the file)
        check_input_size(None, self.input_size_)
        self.grid_ = check_grid(None, self.grid_, self.input_size_)
        check_params(None, self.get_params(), positive=("image_size", "batch_size", "num_neighbors"))
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

    Re-weighted max over b=9 neighbours, 10 % coreset of the normal rows (at most 163,840
    rows, ``coreset_max``). Defect images
    passed to :meth:`fit` never enter a bank; they join the validation split for the
    F1 threshold.
    """

    __init__ = _patchcore_init(ExDD.__init__, {"weighting": "patchcore", "num_neighbors": 9, "normal_ratio": 0.1,
                                               "coreset_max": 163840, "defects_for": "validation", "image_score": "weighted",
                                               "synthetic_filter": None})
