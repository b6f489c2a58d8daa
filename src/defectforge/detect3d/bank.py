"""Training-free 3D anomaly detector: multi-scale FPFH memory bank (Simple3D-style, CPU).

Pipeline per cloud (all in SDN-normalised space, see :mod:`defectforge.detect3d.common`):

1. SDN: centre, per-category scale, fixed voxel (default 0.02; at most ``max_points``
   points, default 20,000; the 40k-point benchmark parts keep 7-19k).
2. Multi-scale FPFH on the voxel points (kNN 40/80/120, PCA normals from 10 neighbours)
   -> 99 values per point (:mod:`defectforge.detect3d.fpfh`).
3. Groups: ``n_groups`` (1,024) farthest-point-sampled centres; a group's feature is
   the mean FPFH of the ``group_size`` (64) voxel points nearest to its centre.
4. Fit: group features of all training (good) clouds, greedy k-center coreset to
   ``coreset_ratio`` (10 %, seeded, :func:`defectforge.bank.coreset.greedy_kcenter`).
5. Predict: group score = Euclidean distance to the nearest bank row (faiss; torch with
   ``device="cuda"``); voxel-point
   score = inverse-distance interpolation from the 3 nearest centres, then the mean over
   the ``smooth_k`` (12) nearest voxel points; every input point gets the IDW (3-NN) of
   the voxel-point scores. Object score = mean of the ``top_k`` (80) largest voxel-point
   scores.

Thresholds (for ``pred_label`` / ``pred_mask``) come from leave-one-cloud-out scores of
the training clouds (each scored against the groups of the others): the largest
object score, and the 99.9th percentile of the point scores. With one training cloud
there is no held-out score and both thresholds are +inf (nothing flagged).
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np
from scipy.spatial import cKDTree

from defectforge.detect.base import Prediction
from defectforge.detect3d.base import DETECTORS3D, Detector3D
from defectforge.detect3d.common import SDN, as_cloud, farthest_point_sampling, idw_interpolate, knn_smooth, topk_mean
from defectforge.detect3d.fpfh import multiscale_fpfh
from defectforge.detect3d.fusion import score_stats, stats_from_thresholds
from defectforge.errors import ConfigError, InputError


class _Prepared:
    """One cloud's voxel points, centres and group features (SDN space)."""

    __slots__ = ("points", "vox", "vox_index", "centres", "groups", "tree")

    def __init__(self, points, vox, vox_index, centres, groups, tree):
        self.points, self.vox, self.vox_index, self.centres, self.groups, self.tree = (
            points, vox, vox_index, centres, groups, tree)


@DETECTORS3D.register("fpfh")
class FPFHBank(Detector3D):
    """Training-free FPFH memory-bank detector for point clouds (one category).

    Fitted attributes: ``sdn_`` (the normalisation with the category scale), ``bank_``,
    ``threshold_``, ``point_threshold_``, ``stats_`` (held-out good score statistics, for
    :mod:`~defectforge.detect3d.fusion`), ``fit_info_``."""

    runtime_params = ("progress", "device")

    def __init__(self, ks: tuple[int, ...] = (40, 80, 120), normal_k: int = 10, n_groups: int = 1024,
                 group_size: int = 64, coreset_ratio: float = 0.1, smooth_k: int = 12, top_k: int = 80,
                 scale: str = "category", voxel: float = 0.02, max_points: int = 20000,
                 max_scale_ratio: float = 4.0, seed: int = 0, device: str = "cpu", progress: Any = False):
        self.ks = ks
        self.normal_k = normal_k
        self.n_groups = n_groups
        self.group_size = group_size
        self.coreset_ratio = coreset_ratio
        self.smooth_k = smooth_k
        self.top_k = top_k
        self.scale = scale
        self.voxel = voxel
        self.max_points = max_points
        self.max_scale_ratio = max_scale_ratio
        self.seed = seed
        self.device = device
        self.progress = progress
        self._nn = None

    def _validate_params(self) -> None:
        ks = tuple(int(k) for k in self.ks)
        if not ks or min(ks) < 3:
            raise ConfigError(f"FPFH neighbourhood sizes must be >= 3, got {self.ks}")
        if not 0 < self.coreset_ratio <= 1:
            raise ConfigError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if self.n_groups < 1 or self.group_size < 1 or self.top_k < 1:
            raise ConfigError("n_groups, group_size and top_k must be positive")
        if not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        self._new_sdn()

    def _nearest(self, bank: np.ndarray):
        """Exact search in ``bank`` (faiss on the CPU, torch on a CUDA device)."""
        from defectforge.bank.knn import NearestNeighbors

        return NearestNeighbors(bank, "faiss", device=str(self.device))

    def _new_sdn(self) -> SDN:
        return SDN(scale=self.scale, voxel=self.voxel, max_points=self.max_points,
                   max_scale_ratio=self.max_scale_ratio)

    # ------------------------------------------------------------------ features
    def _prepare(self, points: np.ndarray, source: str, i: int) -> _Prepared:
        npts = self.sdn_.normalise(points, source)
        vox, vidx, _ = self.sdn_.downsample(npts)
        if len(vox) < max(self.ks) // 2 + 1:
            raise InputError(source, f"only {len(vox)} points remain on the voxel grid "
                                     f"(voxel {self.sdn_.voxel} of the unit ball); the cloud is too sparse "
                                     "or too small for this detector: use a smaller --voxel")
        tree = cKDTree(vox)
        feats = multiscale_fpfh(vox, None, self.ks, self.normal_k, tree)
        rng = np.random.default_rng([self.seed, i])
        centres = farthest_point_sampling(vox, self.n_groups, rng)
        _, gi = tree.query(vox[centres], k=int(min(self.group_size, len(vox))), workers=-1)
        gi = gi.reshape(len(centres), -1)
        groups = feats[gi].mean(axis=1).astype(np.float32)
        return _Prepared(npts, vox, vidx, vox[centres], groups, tree)

    def _score(self, prep: _Prepared, group_scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        vs = idw_interpolate(prep.centres, group_scores, prep.vox, k=3)
        vs = knn_smooth(prep.vox, vs, self.smooth_k, prep.tree)
        ps = idw_interpolate(prep.vox, vs, prep.points, k=3, tree=prep.tree)
        return topk_mean(vs, self.top_k), vs, ps.astype(np.float32)

    # ------------------------------------------------------------------ fit / predict
    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | None = None) -> "FPFHBank":
        """Fit on good clouds (PointCloud, (N, 3) arrays, paths or samples); ``defects`` is ignored."""
        from defectforge.bank.coreset import coreset_size, greedy_kcenter
        from defectforge.detect._progress import progress_task

        self._validate_params()
        clouds = [as_cloud(c, i) for i, c in enumerate(normal)]
        if not clouds:
            raise InputError(None, "no training clouds given")
        self.threshold_ = self.point_threshold_ = float("inf")
        self.stats_ = stats_from_thresholds(self.threshold_, self.point_threshold_)
        self.sdn_ = self._new_sdn().fit(clouds)
        preps = []
        with progress_task("fpfh features", len(clouds), self.progress) as t:
            for i, (p, src) in enumerate(clouds):
                preps.append(self._prepare(p, src, i))
                t.advance()
        allg = np.concatenate([q.groups for q in preps])
        n = coreset_size(len(allg), self.coreset_ratio, minimum=1)
        with progress_task("fpfh coreset", n, self.progress) as t:
            idx = greedy_kcenter(allg, n, seed=self.seed, progress=t.update)
            t.update(n)
        self.bank_ = np.ascontiguousarray(allg[idx])
        self._nn = self._nearest(self.bank_)
        # leave-one-cloud-out thresholds
        obj, pts = [], []
        if len(preps) > 1:
            owner = np.concatenate([np.full(len(q.groups), i) for i, q in enumerate(preps)])
            with progress_task("fpfh validation", len(preps), self.progress) as t:
                for i, q in enumerate(preps):
                    d, _ = self._nearest(allg[owner != i]).search(q.groups, 1)
                    o, vs, _ = self._score(q, d[:, 0])
                    obj.append(o)
                    pts.append(vs)
                    t.advance()
            self.stats_ = score_stats(obj, pts)
            self.threshold_, self.point_threshold_ = self.stats_["object_max"], self.stats_["point_q999"]
        else:
            warnings.warn("one training cloud: no held-out scores, thresholds set to +inf", stacklevel=2)
        self.fit_info_ = {"n_train": len(clouds), "bank_rows": int(len(self.bank_)), "group_rows": int(len(allg)),
                         "voxel_points": [int(len(q.vox)) for q in preps],
                         "input_points": [int(len(p)) for p, _ in clouds],
                         "category_scale": self.sdn_.category_scale, "loo_object_scores": obj}
        return self

    def predict(self, clouds: Iterable[Any]) -> Prediction:
        """Object scores and per-point scores (aligned with each input cloud's points)."""
        from defectforge.detect._progress import progress_task

        self._check_fitted()
        items = list(clouds)
        scores, maps = [], []
        with progress_task("fpfh scoring", len(items), self.progress) as t:
            for i, c in enumerate(items):
                p, src = as_cloud(c, i)
                prep = self._prepare(p, src, i)
                d, _ = self._nn.search(prep.groups, 1)
                o, _, ps = self._score(prep, d[:, 0])
                scores.append(o)
                maps.append(ps)
                t.advance()
        s = np.asarray(scores, dtype=np.float64)
        return Prediction(s, maps, s >= self.threshold_, [m >= self.point_threshold_ for m in maps])

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, Any]:
        import torch

        return {"category_scale": self.sdn_.category_scale, "bank": torch.from_numpy(self.bank_),
                "threshold": self.threshold_, "point_threshold": self.point_threshold_,
                "stats": dict(self.stats_), "fit_info": dict(self.fit_info_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        from defectforge.detect.model_checks import check_finite_state, check_params

        # a tampered or corrupt file (n_groups -1, NaN voxel): refused at load (the loader names the file)
        check_params(None, self.get_params(), positive=("ks", "normal_k", "n_groups", "group_size", "coreset_ratio",
                                                        "smooth_k", "top_k", "voxel", "max_points", "max_scale_ratio"))
        check_finite_state(None, {}, {"threshold": state.get("threshold"), "point_threshold": state.get("point_threshold"),
                                      "category_scale": state.get("category_scale")})
        self.sdn_ = self._new_sdn()
        self.sdn_.category_scale = float(state["category_scale"])
        self.bank_ = state["bank"].numpy().astype(np.float32)
        if self.bank_.ndim != 2 or self.bank_.shape[1] != 33 * len(self.ks):
            raise ValueError("bank width does not match the FPFH configuration")
        self.threshold_ = float(state["threshold"])
        self.point_threshold_ = float(state["point_threshold"])
        self.stats_ = dict(state.get("stats") or stats_from_thresholds(self.threshold_, self.point_threshold_))
        self.fit_info_ = dict(state.get("fit_info", {}))
        self._nn = self._nearest(self.bank_)
