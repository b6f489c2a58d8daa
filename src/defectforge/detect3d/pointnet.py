"""A small point transformer trained on synthetic 3D anomalies (Synthesis4AD-style, CPU-sized),
fused with the training-free FPFH bank.

Pieces: the network and its inputs in :mod:`~defectforge.detect3d.pointnet_model`, the
synthetic training data and loop in :mod:`~defectforge.detect3d.pointnet_train`, score
fusion in :mod:`~defectforge.detect3d.fusion`. This module is the detector: fit phases,
scoring and persistence.

Fit (:meth:`PointTransformerAD.fit`, good clouds only), each phase with its own progress
(``progress=True``; plain lines when stderr is not a terminal) and its seconds in
``fit_info_["phase_s"]``:

1. **prepare**: SDN (:mod:`defectforge.detect3d.common`; centre, per-category scale) and
   a network voxel chosen so the median training cloud keeps about ``net_points`` points.
2. **train**: ``steps`` Adam steps on training clouds with synthetic anomalies of
   ``train_ops`` (default: the full MPAS range) and augmentation.
3. **prototypes** + **coreset**: point features of the good training clouds
   (``proto_layers="all"``: the layer-normed outputs of the embedding and of every block)
   -> greedy coreset to ``bank_ratio`` (at most :data:`MAX_BANK_ROWS` rows).
4. **validation**: at most :data:`VAL_CLOUDS` training clouds, each re-augmented
   (``VAL_GOOD`` good copies) and with ``VAL_ANOMALOUS`` synthetic training-type
   anomalies, scored against the coreset rows of the *other* clouds (leave-one-cloud-out):
   the reference distance, thresholds, held-out good score statistics and, with
   ``fusion="auto"``, the head weight.
5. **fpfh** (``fpfh_weight`` > 0): an :class:`~defectforge.detect3d.bank.FPFHBank` on the
   same clouds.

Scoring: a network point's score is the distance of its feature to the nearest
prototype / the reference distance (+ ``head_weight`` x the head probability for
``fusion`` "fused"/"auto"; the head alone for "head"), smoothed over ``smooth_k``
neighbours and interpolated (IDW, 3-NN) to every input point; object score = mean of the
``top_k`` largest network-point scores. With ``fpfh_weight`` > 0, predict returns
:func:`~defectforge.detect3d.fusion.fuse_scores` of the network and the FPFH bank
(``fusion_norm``, ``fusion_object``, ``object_frac``, ``object_share``), each normalised
by its own held-out good score statistics. ``fpfh_weight=0`` gives the network alone.

Defaults were chosen on the validation splits of ``bench/bench_detect3d.py`` (never its
test defects): the point map ``fpfh_weight=4``, ``fusion_norm="zscore"`` by the best mean of
O- and P-AUROC over both validation splits (held-out good parts with training-type
anomalies, and with a type the unseen-types network never trained on; 4 classes,
2026-12-04); the object score ``fusion_object="sum"``, ``object_share=1`` (the FPFH bank's
own object ranking, z-scored) by :func:`~defectforge.detect3d.fusion.gated_choice`: no
object score that lets the network in won reliably on validation (the best, the top 0.5 %
of the fused map, by one pair: bootstrap P(gain > 0) = 0.52), so the network shapes the
point map only. On a part where the network does rank objects better, choose again
(``bench/bench_detect3d.py --rescore VAL_RUNS --choose-object``). 300 steps on 3,072 network points so
a fit (network + FPFH bank) takes about 90 CPU seconds per class, well inside 5 minutes
on the 2-core machine; see ``docs/bench/detect3d.md``.

Device: ``device="cuda"`` trains and runs the network and the nearest-neighbour searches
(torch backend) on the GPU; neighbourhoods, FPFH and synthesis stay on the CPU.
Threads: on the CPU, fit/predict run with ``threads`` (default 1) torch intra-op threads
and restore the previous setting afterwards (the tensors are small, so extra threads
mostly add synchronisation). Seeding: weights from a ``torch.Generator(seed)``, data from
``numpy.random.default_rng(seed)``; no global random state is touched.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any, Iterable, Iterator

import numpy as np
from scipy.spatial import cKDTree

from defectforge.detect.base import Prediction
from defectforge.detect3d.base import DETECTORS3D, Detector3D
from defectforge.detect3d.common import SDN, as_cloud, idw_interpolate
from defectforge.detect3d.fpfh import pca_normals_centroid
from defectforge.detect3d.fusion import (FPFH_WEIGHTS, HEAD_WEIGHTS, NORMS, OBJECTS, fuse_scores,
                                         fused_thresholds, select_head_weight, stats_from_thresholds)
from defectforge.detect3d.pointnet_model import (FEATURE_WIDTHS, build_model, init_params, input_dim,
                                                 parse_features, point_inputs)
from defectforge.detect3d.pointnet_scoring import PrototypeScoring
from defectforge.detect3d.pointnet_train import (TRAIN_OPS, TRAIN_RANGES, UNSEEN_TRAIN_OPS, SyntheticAnomalies,
                                                 train_network)
from defectforge.errors import ConfigError, InputError

__all__ = ["PointTransformerAD", "FEATURE_WIDTHS", "FPFH_WEIGHTS", "HEAD_WEIGHTS", "TRAIN_OPS", "TRAIN_RANGES",
           "UNSEEN_TRAIN_OPS", "fuse_scores", "parse_features", "input_dim", "select_head_weight"]

MAX_BANK_ROWS = 16384
"""Prototype bank cap: the coreset is at most this many rows, so fit time does not grow
with the square of the number of training clouds."""


@DETECTORS3D.register("pointnet")
class PointTransformerAD(Detector3D, PrototypeScoring):
    """Point transformer trained on synthetic anomalies, scored by prototype matching and
    fused with an FPFH bank.

    Fitted attributes: ``sdn_``, ``net_voxel_``, ``model_``, ``bank_``, ``ref_distance_``,
    ``head_weight_`` (the weight in use; ``fusion="auto"`` chooses it at fit),
    ``validation_``, ``threshold_``, ``point_threshold_``, ``stats_`` (held-out good score
    statistics of the network part), ``fit_info_``, ``fpfh_`` (the fused FPFH bank, or None
    when ``fpfh_weight`` is 0)."""

    runtime_params = ("progress", "device")

    def __init__(self, channels: int = 32, n_layers: int = 3, k: int = 16, net_points: int = 3072,
                 steps: int = 300, lr: float = 2e-3, anomaly_prob: float = 0.8,
                 train_ops: tuple[str, ...] = TRAIN_OPS, train_ranges: dict | None = None,
                 rotate_deg: float = 15.0, jitter: float = 0.002, dropout: float = 0.1,
                 bank_ratio: float = 0.25, fusion: str = "proto", smooth_k: int = 8, top_k: int = 10,
                 scale: str = "category", voxel: float = 0.02, max_scale_ratio: float = 4.0,
                 features: str = "normal,fpfh,shape", proto_layers: str = "all", head_weight: float = 1.0,
                 fpfh_weight: float = 4.0, fusion_norm: str = "zscore", fusion_object: str = "sum",
                 object_frac: float = 0.005, object_share: float | None = 1.0, seed: int = 0,
                 threads: int | None = 1, device: str = "cpu", progress: Any = False):
        self.channels, self.n_layers, self.k = channels, n_layers, k
        self.net_points, self.steps, self.lr = net_points, steps, lr
        self.anomaly_prob = anomaly_prob
        self.train_ops, self.train_ranges = train_ops, train_ranges
        self.rotate_deg, self.jitter, self.dropout = rotate_deg, jitter, dropout
        self.bank_ratio, self.fusion = bank_ratio, fusion
        self.smooth_k, self.top_k = smooth_k, top_k
        self.scale, self.voxel, self.max_scale_ratio = scale, voxel, max_scale_ratio
        self.features, self.proto_layers, self.head_weight = features, proto_layers, head_weight
        self.fpfh_weight, self.fusion_norm, self.fusion_object = fpfh_weight, fusion_norm, fusion_object
        self.object_frac, self.object_share = object_frac, object_share
        self.seed, self.threads, self.device, self.progress = seed, threads, device, progress
        self._nn = None

    def _validate_params(self) -> None:
        from defectforge.synth3d.operators import OPERATORS

        parse_features(self.features)
        if self.proto_layers not in ("last", "all"):
            raise ConfigError(f"proto_layers must be 'last' or 'all', got {self.proto_layers!r}")
        if not self.head_weight >= 0:
            raise ConfigError(f"head_weight must be >= 0, got {self.head_weight}")
        if not self.fpfh_weight >= 0:
            raise ConfigError(f"fpfh_weight must be >= 0, got {self.fpfh_weight}")
        if self.fusion_norm not in NORMS or self.fusion_object not in OBJECTS:
            raise ConfigError(f"fusion_norm must be one of {', '.join(NORMS)} and fusion_object one of "
                              f"{', '.join(OBJECTS)}, got {self.fusion_norm!r}, {self.fusion_object!r}")
        if not 0 < self.object_frac <= 1:
            raise ConfigError(f"object_frac must be in (0, 1], got {self.object_frac}")
        if self.object_share is not None and not 0 <= self.object_share <= 1:
            raise ConfigError(f"object_share must be in [0, 1] or None, got {self.object_share}")
        for o in self.train_ops:
            if o not in OPERATORS:
                raise ConfigError(f"unknown synthesis operator {o!r}; choose from {', '.join(OPERATORS)}")
        if self.fusion not in ("proto", "head", "fused", "auto"):
            raise ConfigError(f"fusion must be 'proto', 'head', 'fused' or 'auto', got {self.fusion!r}")
        if self.channels < 4 or self.n_layers < 1 or self.k < 2 or self.net_points < 64 or self.steps < 0:
            raise ConfigError("channels >= 4, n_layers >= 1, k >= 2, net_points >= 64 and steps >= 0 are required")
        if not 0 < self.bank_ratio <= 1:
            raise ConfigError(f"bank_ratio must be in (0, 1], got {self.bank_ratio}")
        if not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        self._new_sdn()

    def _new_sdn(self) -> SDN:
        return SDN(scale=self.scale, voxel=self.voxel, max_points=max(self.net_points * 4, 200),
                   max_scale_ratio=self.max_scale_ratio)

    def _torch_device(self):
        import torch

        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but torch sees no CUDA device")
        return torch.device(self.device)

    def _nearest(self, bank: np.ndarray):
        from defectforge.bank.knn import NearestNeighbors

        return NearestNeighbors(bank, "faiss", device=str(self.device))

    @contextlib.contextmanager
    def _torch_threads(self) -> Iterator[None]:
        """Run with ``threads`` torch intra-op threads, restoring the previous setting."""
        import torch

        if self.threads is None:
            yield
            return
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    # ------------------------------------------------------------------ data
    def _coarse(self, points: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(normalised input points, network points) of one cloud."""
        from defectforge.synth3d.geometry import voxel_downsample

        npts = self.sdn_.normalise(points, source)
        net, _ = voxel_downsample(npts, self.net_voxel_)
        if len(net) > 3 * self.net_points:  # much denser/larger than the training clouds
            idx = np.random.default_rng(self.seed).choice(len(net), 3 * self.net_points, replace=False)
            net = net[np.sort(idx)]
        if len(net) < self.k + 1:
            raise InputError(source, f"only {len(net)} points remain on the network voxel grid; the cloud is too small")
        return npts, net

    def _tensors(self, pts: np.ndarray, nrm: np.ndarray):
        return point_inputs(pts, nrm, self.features, self.k, getattr(self, "net_voxel_", None) or 0.02,
                            str(self.device))

    def _data(self) -> SyntheticAnomalies:
        return SyntheticAnomalies(tuple(self.train_ops), self.train_ranges, self.rotate_deg, self.jitter, self.dropout)

    # ------------------------------------------------------------------ fit
    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | None = None) -> "PointTransformerAD":
        """Train on good clouds with on-the-fly synthetic anomalies; ``defects`` is ignored."""
        with self._torch_threads():
            return self._fit(normal)

    def _network_voxel(self, normed: list[np.ndarray]) -> float:
        """Voxel at which the median training cloud keeps about ``net_points`` points."""
        from defectforge.synth3d.geometry import voxel_downsample

        v = self.sdn_.voxel
        med = float(np.median([len(voxel_downsample(q, v)[0]) for q in normed]))
        if med > self.net_points:
            v *= math.sqrt(med / self.net_points)  # surface points scale ~ 1/voxel^2
            for _ in range(20):
                med = float(np.median([len(voxel_downsample(q, v)[0]) for q in normed]))
                if med <= self.net_points * 1.05:
                    break
                v *= 1.05
        return float(v)

    def _fit(self, normal: Iterable[Any]) -> "PointTransformerAD":
        import torch

        from defectforge.bank.coreset import coreset_size, greedy_kcenter
        from defectforge.detect._progress import progress_task
        from defectforge.synth3d.geometry import voxel_downsample

        self._validate_params()
        device = self._torch_device()
        clouds = [as_cloud(c, i) for i, c in enumerate(normal)]
        if not clouds:
            raise InputError(None, "no training clouds given")
        self.head_weight_, self.validation_, self.ref_distance_ = float(self.head_weight), {}, 1.0
        self.threshold_ = self.point_threshold_ = float("inf")
        self.stats_ = stats_from_thresholds(float("inf"), float("inf"))
        show = self.progress  # True (bars), False, or a progress(stage, done, total) callback
        phase_s: dict[str, float] = {}  # seconds per fit phase (fit_info_["phase_s"])
        self.fpfh_ = None
        tick = time.perf_counter()
        self.sdn_ = self._new_sdn().fit(clouds)
        normed = [self.sdn_.normalise(p, s) for p, s in clouds]
        self.net_voxel_ = self._network_voxel(normed)
        train = []
        with progress_task("pointnet preparing clouds", len(clouds), show) as t:
            for q, (_, src) in zip(normed, clouds):
                net = voxel_downsample(q, self.net_voxel_)[0]
                if len(net) < max(self.k + 1, 50):
                    raise InputError(src, f"only {len(net)} points remain on the network voxel grid")
                train.append((net, pca_normals_centroid(net, 10)))
                t.advance()
        phase_s["prepare"] = time.perf_counter() - tick
        model = build_model(input_dim(self.features), self.channels, self.n_layers, self.k)
        init_params(model, torch.Generator().manual_seed(self.seed))
        model.to(device)
        tick = time.perf_counter()
        with progress_task("pointnet training", self.steps, show) as t:
            trained = train_network(model, train, self._data(), self._tensors, steps=self.steps, lr=self.lr,
                                    anomaly_prob=self.anomaly_prob, seed=self.seed, task=t)
        phase_s["train"] = time.perf_counter() - tick
        self.model_ = model
        # prototype bank from the clean training clouds (coreset capped at MAX_BANK_ROWS)
        feats = []
        tick = time.perf_counter()
        with progress_task("pointnet prototype features", len(train), show) as t:
            for p, nr in train:
                feats.append(self._features(p, nr)[0])
                t.advance()
        phase_s["prototypes"] = time.perf_counter() - tick
        allf = np.concatenate(feats)
        owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(feats)])
        n = min(coreset_size(len(allf), self.bank_ratio, minimum=1), MAX_BANK_ROWS)
        tick = time.perf_counter()
        with progress_task("pointnet coreset", n, show) as t:
            keep = greedy_kcenter(allf, n, seed=self.seed, progress=t.update)
            t.update(n)
        phase_s["coreset"] = time.perf_counter() - tick
        self.bank_ = np.ascontiguousarray(allf[keep])
        self._nn = self._nearest(self.bank_)
        if len(train) > 1:
            tick = time.perf_counter()
            self._validate(train, owner[keep], show)
            phase_s["validation"] = time.perf_counter() - tick
        else:
            warnings.warn("one training cloud: no held-out scores, thresholds set to +inf", stacklevel=2)
        if self.fpfh_weight > 0:  # the FPFH bank whose normalised scores are added (see fuse_scores)
            from defectforge.detect3d.bank import FPFHBank

            tick = time.perf_counter()
            self.fpfh_ = FPFHBank(scale=self.scale, voxel=self.voxel, max_scale_ratio=self.max_scale_ratio,
                                  seed=self.seed, device=self.device, progress=self.progress).fit([p for p, _ in clouds])
            phase_s["fpfh"] = time.perf_counter() - tick
        losses = trained["losses"]
        self.fit_info_ = {"n_train": len(clouds), "net_voxel": self.net_voxel_,
                          "net_points": [int(len(p)) for p, _ in train], "bank_rows": int(len(self.bank_)),
                          "loss_first": float(np.mean(losses[:10])) if losses else float("nan"),
                          "loss_last": float(np.mean(losses[-10:])) if losses else float("nan"),
                          "losses": [float(v) for v in losses], "heldout_loss_before": trained["heldout_loss_before"],
                          "heldout_loss_after": trained["heldout_loss_after"], "category_scale": self.sdn_.category_scale,
                          "head_weight": self.effective_head_weight(), "fpfh_weight": float(self.fpfh_weight),
                          "phase_s": phase_s, "validation": self.validation_}
        return self

    # ------------------------------------------------------------------ predict
    def predict(self, clouds: Iterable[Any]) -> Prediction:
        """Object scores and per-point scores (aligned with each input cloud's points)."""
        self._check_fitted()
        with self._torch_threads():
            return self._predict(clouds)

    def _predict(self, clouds: Iterable[Any]) -> Prediction:
        from defectforge.detect._progress import progress_task

        items = list(clouds)
        scores, maps = [], []
        with progress_task("pointnet scoring", len(items), self.progress) as t:
            for i, c in enumerate(items):
                npts, net, proto, head = self._components(c, i)
                tree = cKDTree(net)
                s, obj = self._point_scores(net, proto, head, tree=tree)
                scores.append(obj)
                maps.append(idw_interpolate(net, s, npts, k=3, tree=tree).astype(np.float32))
                t.advance()
        s = np.asarray(scores, dtype=np.float64)
        if self.fpfh_ is None:
            return Prediction(s, maps, s >= self.threshold_, [m >= self.point_threshold_ for m in maps])
        fp = self.fpfh_.predict(items)
        w = float(self.fpfh_weight)
        s, maps = fuse_scores(s, maps, fp.pred_score, fp.anomaly_map, self.stats_, self.fpfh_.stats_, w,
                              self.fusion_norm, self.fusion_object, self.object_frac, self.object_share)
        thr_o, thr_p = fused_thresholds(self.stats_, self.fpfh_.stats_, w, self.fusion_norm, self.object_share)
        if self.fusion_object == "map":
            thr_o = thr_p
        return Prediction(s, maps, s >= thr_o, [m >= thr_p for m in maps])

    def norms(self) -> tuple[float, float]:
        """(object, point) reference scores of the network part (its held-out thresholds)."""
        return self.threshold_, self.point_threshold_

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, Any]:
        import torch

        info = {k: v for k, v in self.fit_info_.items() if k != "losses"}
        return {"category_scale": self.sdn_.category_scale, "net_voxel": self.net_voxel_,
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.model_.state_dict().items()},
                "bank": torch.from_numpy(self.bank_), "ref_distance": self.ref_distance_,
                "head_weight_": self.head_weight_, "validation": self.validation_,
                "threshold": self.threshold_, "point_threshold": self.point_threshold_, "stats": dict(self.stats_),
                "fit_info": info, "fpfh": None if self.fpfh_ is None else self.fpfh_.to_entry(),
                "object_share": self.object_share}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.sdn_ = self._new_sdn()
        self.sdn_.category_scale = float(state["category_scale"])
        self.net_voxel_ = float(state["net_voxel"])
        model = build_model(input_dim(self.features), self.channels, self.n_layers, self.k)
        model.load_state_dict(state["state_dict"])
        model.eval()
        self.model_ = model.to(self._torch_device())
        self.bank_ = state["bank"].numpy().astype(np.float32)
        width = self.channels * (self.n_layers + 1 if self.proto_layers == "all" else 1)
        if self.bank_.ndim != 2 or self.bank_.shape[1] != width:
            raise ValueError("bank width does not match the network channels")
        self.ref_distance_ = float(state["ref_distance"])
        self.head_weight_ = float(state.get("head_weight_", self.head_weight))
        self.validation_ = dict(state.get("validation", {}))
        self.threshold_ = float(state["threshold"])
        self.point_threshold_ = float(state["point_threshold"])
        self.stats_ = dict(state.get("stats") or stats_from_thresholds(self.threshold_, self.point_threshold_))
        self.fit_info_ = dict(state.get("fit_info", {}))
        if "object_share" not in state:  # saved before object_share: a summed object score used the point weight
            self.object_share = None
        self._nn = self._nearest(self.bank_)
        self.fpfh_ = None
        if state.get("fpfh") is not None:
            from defectforge.detect3d.bank import FPFHBank

            self.fpfh_ = FPFHBank.from_entry(state["fpfh"], progress=self.progress, device=self.device)
        elif float(self.fpfh_weight) > 0:
            raise ValueError("the model has fpfh_weight > 0 but no FPFH bank")
