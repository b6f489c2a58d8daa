"""A small point transformer trained on synthetic 3D anomalies (Synthesis4AD-style, CPU-sized).

Model (:class:`PointTransformer`, plain PyTorch): per-point inputs chosen by ``features``,
a comma-separated subset of

- ``normal`` (3): the PCA normal (oriented away from the centroid; not rotation invariant),
- ``fpfh`` (33): FPFH from 24 neighbours / 100 (the local histogram makes small surface
  changes visible at the coarse network resolution),
- ``shape`` (10): rotation-invariant neighbourhood-PCA descriptors at two scales (16 and
  48 points): eigenvalue shares, spread and signed height above the local mean
  (:mod:`defectforge.detect3d.shape`).

Absolute coordinates are left out so the head cannot memorise where defects were
synthesised; positions enter only as relative offsets. Inputs -> linear embedding ->
``n_layers`` pre-norm blocks of kNN vector attention (``k`` neighbours; weights
``softmax(W (q_i - k_j + pe_ij))`` over the neighbours, values ``v_j + pe_ij``, ``pe`` an
MLP of the relative position ``p_i - p_j``) plus a point-wise MLP -> ``C``-d point
features -> a per-point anomaly logit (supervised head).

Training (:meth:`PointTransformerAD.fit`) uses good clouds only:

- SDN (see :mod:`defectforge.detect3d.common`): centre, per-category scale, and a fixed
  network voxel in normalised space, chosen once at fit so the median training cloud
  keeps about ``net_points`` points; every later cloud uses the same voxel.
- Each step draws a training cloud and, with probability ``anomaly_prob``, applies one
  synth3d operator from ``train_ops`` with parameters drawn uniformly from
  ``train_ranges`` (MPAS-style synthesis on the fly, exact point masks). The default is
  the full MPAS range (:data:`TRAIN_OPS`: small and large bumps/dents, pits, scratches,
  grooves, bends, cracks, free-form bulges and sinks); :data:`UNSEEN_TRAIN_OPS` (local
  point and line types only) is what the benchmark uses to test on never-seen types.
  Augmentations:
  a random rotation up to ``rotate_deg`` about a random axis, Gaussian jitter
  (``jitter`` in normalised units), random point dropout up to ``dropout``.
- Loss: per-point binary cross-entropy with the positive weight ``n_neg / n_pos`` (<= 20).

Inference: point features of the normal training clouds form the prototype bank
(greedy coreset to ``bank_ratio``). ``proto_layers="last"`` uses the final features;
``"all"`` concatenates the (parameter-free layer-normed) outputs of the embedding and of
every block, so the prototypes keep low-level geometry that the supervised training may
have discarded. A point's prototype score is the distance to its nearest prototype
divided by a reference distance (99th percentile on held-out good points). Fusion:
``"proto"`` (prototype score only), ``"head"`` (sigmoid of the logit), ``"fused"``
(prototype + ``head_weight`` x head) or ``"auto"`` (``head_weight`` chosen in
:data:`HEAD_WEIGHTS`, 0 included, by :func:`select_head_weight` on a synthetic validation
set built from the training clouds only: re-augmented good copies and copies with a
training-type anomaly, each scored against the prototypes of the other clouds). Point
scores are smoothed over ``smooth_k`` neighbours, interpolated (IDW, 3-NN) to every
input point; the object score is the mean of the ``top_k`` largest network-point scores.
The reference distance and the thresholds come from the same leave-one-cloud-out
validation clouds.

FPFH fusion (``fpfh_weight`` > 0): fit also fits a :class:`~defectforge.detect3d.bank.FPFHBank`
on the same clouds, and predict returns :func:`fuse_scores`: network score / its held-out
threshold + ``fpfh_weight`` x FPFH score / the bank's held-out threshold (objects and
points alike), so both parts are on a "1 = largest good held-out score" scale; the
fused thresholds are ``1 + fpfh_weight`` (an upper bound of the sum on held-out good
clouds). The weight is chosen on a validation split (``bench/bench_detect3d.py --split
val --sweep``), never on test data: the default 2.0 is the choice for the default (full
MPAS) training, 1.0 that for the local-types-only training validated on an unseen type
(``docs/bench/detect3d.md``). ``fpfh_weight=0`` gives the network alone.

Fit phases, each with its own progress (``progress=True``; plain lines when stderr is
not a terminal): preparing clouds, training, prototype features, coreset (at most
:data:`MAX_BANK_ROWS` rows), leave-one-cloud-out validation (at most :data:`VAL_CLOUDS`
clouds, each against the coreset rows of the other clouds), and the FPFH bank.

Defaults (inputs ``normal,fpfh,shape``, ``proto_layers="all"``, 6,144 network points,
600 steps, ``fusion="proto"``, ``top_k=10``) were chosen on the validation splits of
``bench/bench_detect3d.py`` (training-type anomalies for the network, a held-out type for
the head weight), never on its test defects; see ``docs/bench/detect3d.md``. About
3 minutes of fit per category on one busy core; the supervised head still shapes the
features even when its probability is not added to the score.

Threads: fit/predict run with ``threads`` (default 1) torch intra-op threads and restore
the previous setting afterwards. The tensors are small (a few thousand points), so extra
threads mostly add synchronisation: on the shared 2-core machine 20 tiny training steps
took 0.8 s with one thread and 43 s with two. ``threads=None`` leaves torch's setting.

Seeding: weights from a ``torch.Generator(seed)``, data from
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
from defectforge.detect3d.common import SDN, as_cloud, idw_interpolate, knn_smooth, topk_mean
from defectforge.detect3d.fpfh import pca_normals_centroid
from defectforge.detect3d.shape import SHAPE_KS, local_shape_features
from defectforge.errors import ConfigError, InputError

FPFH_K = 24
FEATURE_WIDTHS = {"normal": 3, "fpfh": 33, "shape": 5 * len(SHAPE_KS)}
HEAD_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
TRAIN_OPS = ("bump", "dent", "pit", "scratch", "groove", "bend", "crack", "freeform", "bulge", "sink")
"""The full MPAS range: 1D point and line, 2D plane (bend, crack), 3D free-form."""
UNSEEN_TRAIN_OPS = ("bump", "dent", "pit", "scratch")
"""Local point and line types only: the network the benchmark tests on types it never saw."""
TRAIN_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    # small and large (non-local) point defects
    "bump": {"radius": (0.03, 0.12), "depth": (0.006, 0.02)},
    "dent": {"radius": (0.03, 0.12), "depth": (0.006, 0.02)},
    "pit": {"radius": (0.01, 0.03), "depth": (0.005, 0.012)},
    "scratch": {"length": (0.1, 0.3), "width": (0.012, 0.025), "depth": (0.003, 0.006)},
    "groove": {"length": (0.1, 0.3), "width": (0.01, 0.02), "depth": (0.004, 0.008)},
    "bend": {"angle": (6.0, 20.0), "zone": (0.03, 0.06)},
    "crack": {"length": (0.1, 0.3), "gap": (0.006, 0.014), "depth": (0.03, 0.08)},
    "freeform": {"size": (0.05, 0.15), "amplitude": (0.008, 0.025)},
    "bulge": {"size": (0.05, 0.15), "amplitude": (0.008, 0.025)},
    "sink": {"size": (0.05, 0.15), "amplitude": (0.008, 0.025)},
}
FPFH_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Weights of the FPFH bank's normalised scores tried when choosing ``fpfh_weight`` on validation."""
MAX_BANK_ROWS = 16384
"""Prototype bank cap: the coreset is at most this many rows, so fit time does not grow
with the square of the number of training clouds."""
VAL_CLOUDS = 4
"""Leave-one-cloud-out validation uses at most this many training clouds (evenly spaced)."""


def fuse_scores(net_obj, net_maps, fpfh_obj, fpfh_maps, net_norm: tuple[float, float],
                fpfh_norm: tuple[float, float], weight: float):
    """Object scores and point maps ``net / net_norm + weight * fpfh / fpfh_norm``.

    Each norm is ``(object, point)`` reference scores of good held-out clouds (the
    detectors' leave-one-cloud-out thresholds), so both parts are on a "1 = the largest
    good score" scale before they are added.
    """
    no, npn = (float(v) if np.isfinite(v) and v > 0 else 1.0 for v in net_norm)
    fo, fpn = (float(v) if np.isfinite(v) and v > 0 else 1.0 for v in fpfh_norm)
    obj = np.asarray(net_obj, dtype=np.float64) / no + weight * np.asarray(fpfh_obj, dtype=np.float64) / fo
    maps = [(np.asarray(a, dtype=np.float64) / npn + weight * np.asarray(b, dtype=np.float64) / fpn).astype(np.float32)
            for a, b in zip(net_maps, fpfh_maps)]
    return obj, maps


def parse_features(features: str) -> tuple[str, ...]:
    """Validated input parts of a ``features`` spec such as ``"normal,fpfh,shape"``."""
    parts = tuple(f.strip() for f in str(features).split(",") if f.strip())
    bad = [f for f in parts if f not in FEATURE_WIDTHS]
    if not parts or bad or len(set(parts)) != len(parts):
        raise ConfigError(f"features must be a comma-separated subset of {', '.join(FEATURE_WIDTHS)}, got {features!r}")
    return parts


def input_dim(features: str) -> int:
    return sum(FEATURE_WIDTHS[f] for f in parse_features(features))


def _build_model(in_dim: int, channels: int, n_layers: int, k: int):
    import torch
    from torch import nn

    class _Block(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.norm1 = nn.LayerNorm(c)
            self.q = nn.Linear(c, c)
            self.kv = nn.Linear(c, 2 * c)
            self.pos = nn.Sequential(nn.Linear(3, c), nn.ReLU(), nn.Linear(c, c))
            self.attn = nn.Linear(c, c)
            self.out = nn.Linear(c, c)
            self.norm2 = nn.LayerNorm(c)
            self.ffn = nn.Sequential(nn.Linear(c, 2 * c), nn.ReLU(), nn.Linear(2 * c, c))

        def forward(self, x, xyz, nbr):
            h = self.norm1(x)
            q = self.q(h)
            n, kn = nbr.shape
            flat = nbr.reshape(-1)
            # index_select (backward: index_add) is much faster on CPU than advanced indexing
            kk, v = self.kv(h).index_select(0, flat).view(n, kn, -1).chunk(2, dim=-1)  # (N, K, C) each
            pe = self.pos(xyz[:, None, :] - xyz.index_select(0, flat).view(n, kn, 3))
            w = torch.softmax(self.attn(q[:, None, :] - kk + pe), dim=1)
            x = x + self.out((w * (v + pe)).sum(dim=1))
            return x + self.ffn(self.norm2(x))

    class PointTransformer(nn.Module):
        """kNN vector-attention point transformer: (N, in_dim) -> features (N, C), logits (N,)."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(in_dim, channels), nn.ReLU(), nn.Linear(channels, channels))
            self.blocks = nn.ModuleList([_Block(channels) for _ in range(n_layers)])
            self.norm = nn.LayerNorm(channels)
            self.head = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, 1))

        def forward(self, feats, xyz, nbr, all_layers: bool = False):
            """(features, logits); ``all_layers`` concatenates the parameter-free layer-normed
            outputs of the embedding and of every block (multi-layer prototype features)."""
            x = self.embed(feats)
            layers = [x]
            for b in self.blocks:
                x = b(x, xyz, nbr)
                layers.append(x)
            f = self.norm(x)
            logit = self.head(f).squeeze(-1)
            if all_layers:
                c = x.shape[-1]
                f = torch.cat([nn.functional.layer_norm(h, (c,)) for h in layers], dim=-1) / math.sqrt(len(layers))
            return f, logit

    return PointTransformer()


def _init_params(model, generator) -> None:
    """Deterministic init from ``generator``: Linear U(+-1/sqrt(fan_in)), zero bias; norms 1/0."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 * bound - bound)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()


def _bce(logit, y):
    """Per-point BCE with positive weight n_neg / n_pos (at most 20)."""
    import torch

    n_pos = float(y.sum())
    pw = torch.tensor(min(20.0, (len(y) - n_pos) / n_pos) if n_pos > 0 else 1.0)
    return torch.nn.functional.binary_cross_entropy_with_logits(logit, y, pos_weight=pw)


VAL_GOOD, VAL_ANOMALOUS = 2, 3


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))


def select_head_weight(points: list[np.ndarray], proto: list[np.ndarray], head: list[np.ndarray],
                       masks: list[np.ndarray], smooth_k: int, top_k: int,
                       weights: Iterable[float] = HEAD_WEIGHTS) -> tuple[float, list[dict[str, float]]]:
    """The head weight ``w`` (score = prototype + w x head) with the best mean of object and
    pooled point AUROC on the given validation clouds (ties: the smaller weight).

    Inputs are per-cloud arrays over network points; clouds with an empty mask are the good
    ones. Returns ``(w, table)`` with one row per weight. Pure function of its inputs, so
    it can only see the validation data it is given.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.array([bool(np.any(m)) for m in masks])
    pl = np.concatenate(masks).astype(bool)
    trees = [cKDTree(p) for p in points]
    table, best = [], (-np.inf, 0.0)
    for w in weights:
        sm = [knn_smooth(p, pr + w * h, smooth_k, t) for p, pr, h, t in zip(points, proto, head, trees)]
        o = roc_auc_score(labels, [topk_mean(v, top_k) for v in sm]) if 0 < labels.sum() < len(labels) else float("nan")
        pa = roc_auc_score(pl, np.concatenate(sm)) if 0 < pl.sum() < len(pl) else float("nan")
        crit = float(np.nanmean([o, pa])) if np.isfinite([o, pa]).any() else -np.inf
        table.append({"head_weight": float(w), "o_auroc": float(o), "p_auroc": float(pa)})
        if crit > best[0] + 1e-9:
            best = (crit, float(w))
    return best[1], table


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= max(np.linalg.norm(axis), 1e-12)
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


@DETECTORS3D.register("pointnet")
class PointTransformerAD(Detector3D):
    """Point transformer trained on synthetic anomalies, scored by prototype matching.

    Fitted attributes: ``sdn_``, ``net_voxel_``, ``model_``, ``bank_``, ``ref_distance_``,
    ``head_weight_`` (the weight in use; ``fusion="auto"`` chooses it at fit),
    ``validation_``, ``threshold_``, ``point_threshold_``, ``fit_info_``, ``fpfh_`` (the fused
    FPFH bank, or None when ``fpfh_weight`` is 0)."""

    def __init__(self, channels: int = 32, n_layers: int = 3, k: int = 16, net_points: int = 6144,
                 steps: int = 600, lr: float = 2e-3, anomaly_prob: float = 0.8,
                 train_ops: tuple[str, ...] = TRAIN_OPS, train_ranges: dict | None = None,
                 rotate_deg: float = 15.0, jitter: float = 0.002, dropout: float = 0.1,
                 bank_ratio: float = 0.25, fusion: str = "proto", smooth_k: int = 8, top_k: int = 10,
                 scale: str = "category", voxel: float = 0.02, max_scale_ratio: float = 4.0,
                 features: str = "normal,fpfh,shape", proto_layers: str = "all", head_weight: float = 1.0,
                 fpfh_weight: float = 2.0, seed: int = 0, threads: int | None = 1, progress: Any = False):
        self.channels, self.n_layers, self.k = channels, n_layers, k
        self.net_points, self.steps, self.lr = net_points, steps, lr
        self.anomaly_prob = anomaly_prob
        self.train_ops, self.train_ranges = train_ops, train_ranges
        self.rotate_deg, self.jitter, self.dropout = rotate_deg, jitter, dropout
        self.bank_ratio, self.fusion = bank_ratio, fusion
        self.smooth_k, self.top_k = smooth_k, top_k
        self.scale, self.voxel, self.max_scale_ratio = scale, voxel, max_scale_ratio
        self.features, self.proto_layers, self.head_weight = features, proto_layers, head_weight
        self.fpfh_weight = fpfh_weight
        self.seed, self.threads, self.progress = seed, threads, progress
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
        for o in self.train_ops:
            if o not in OPERATORS:
                raise ConfigError(f"unknown synthesis operator {o!r}; choose from {', '.join(OPERATORS)}")
        if self.fusion not in ("proto", "head", "fused", "auto"):
            raise ConfigError(f"fusion must be 'proto', 'head', 'fused' or 'auto', got {self.fusion!r}")
        if self.channels < 4 or self.n_layers < 1 or self.k < 2 or self.net_points < 64 or self.steps < 0:
            raise ConfigError("channels >= 4, n_layers >= 1, k >= 2, net_points >= 64 and steps >= 0 are required")
        if not 0 < self.bank_ratio <= 1:
            raise ConfigError(f"bank_ratio must be in (0, 1], got {self.bank_ratio}")
        self._new_sdn()

    def _new_sdn(self) -> SDN:
        return SDN(scale=self.scale, voxel=self.voxel, max_points=max(self.net_points * 4, 200),
                   max_scale_ratio=self.max_scale_ratio)

    @property
    def _ranges(self) -> dict[str, dict[str, tuple[float, float]]]:
        return self.train_ranges if self.train_ranges is not None else TRAIN_RANGES

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
        import torch

        from defectforge.detect3d.fpfh import fpfh_from_neighbours

        tree = cKDTree(pts)
        kf = int(min(FPFH_K, len(pts) - 1))
        dist, nbr = tree.query(pts, k=max(self.k, kf + 1), workers=-1)
        parts = []
        for name in parse_features(self.features):
            if name == "normal":
                parts.append(nrm)
            elif name == "fpfh":
                parts.append(fpfh_from_neighbours(pts, nrm, nbr[:, 1:kf + 1], dist[:, 1:kf + 1]) / 100.0)
            else:  # "shape": spread relative to the network voxel, so O(1) values
                parts.append(local_shape_features(pts, nrm, SHAPE_KS, unit=4 * (getattr(self, "net_voxel_", None) or 0.02), tree=tree))
        nbr = nbr[:, :int(min(self.k, len(pts)))]
        feats = np.concatenate(parts, axis=1)
        return (torch.from_numpy(feats.astype(np.float32)), torch.from_numpy(pts.astype(np.float32)),
                torch.from_numpy(nbr.astype(np.int64)))

    def _synth(self, pts: np.ndarray, nrm: np.ndarray, rng: np.random.Generator):
        from defectforge.synth3d.operators import SynthesisError, apply

        for _ in range(3):
            op = self.train_ops[int(rng.integers(len(self.train_ops)))]
            params = {p: float(rng.uniform(lo, hi)) for p, (lo, hi) in self._ranges.get(op, {}).items()}
            try:
                r = apply(op, pts, nrm, rng, **params)
            except SynthesisError:
                continue
            if r.mask.any():
                return r.points, r.normals, r.mask
        return pts, nrm, np.zeros(len(pts), dtype=bool)

    def _augment(self, pts, nrm, mask, rng):
        keep = rng.random(len(pts)) >= rng.uniform(0, self.dropout)
        pts, nrm, mask = pts[keep], nrm[keep], mask[keep]
        if self.rotate_deg > 0:
            R = _rotation(rng, self.rotate_deg)
            pts, nrm = pts @ R.T, nrm @ R.T
        if self.jitter > 0:
            pts = pts + np.clip(rng.normal(0, self.jitter, pts.shape), -3 * self.jitter, 3 * self.jitter)
        # normals as prediction computes them (PCA on the points the network sees), not the
        # operator's or the rotated ones: otherwise training clouds carry normal cues that test
        # clouds never have, and the head learns them instead of the geometry
        return pts, pca_normals_centroid(pts, 10), mask

    # ------------------------------------------------------------------ fit
    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | None = None) -> "PointTransformerAD":
        """Train on good clouds with on-the-fly synthetic anomalies; ``defects`` is ignored."""
        with self._torch_threads():
            return self._fit(normal)

    def _fit(self, normal: Iterable[Any]) -> "PointTransformerAD":
        import torch

        from defectforge.detect._progress import progress_task
        from defectforge.bank.coreset import coreset_size, greedy_kcenter
        from defectforge.bank.knn import NearestNeighbors
        from defectforge.synth3d.geometry import voxel_downsample

        self._validate_params()
        clouds = [as_cloud(c, i) for i, c in enumerate(normal)]
        if not clouds:
            raise InputError(None, "no training clouds given")
        self.head_weight_, self.validation_, self.ref_distance_ = float(self.head_weight), {}, 1.0
        self.threshold_ = self.point_threshold_ = float("inf")
        show = self.progress  # True (bars), False, or a progress(stage, done, total) callback
        phase_s: dict[str, float] = {}  # seconds per fit phase (fit_info_["phase_s"])
        self.fpfh_ = None
        self.sdn_ = self._new_sdn().fit(clouds)
        normed = [self.sdn_.normalise(p, s) for p, s in clouds]
        # network voxel: the median training cloud keeps about net_points points
        v = self.sdn_.voxel
        med = float(np.median([len(voxel_downsample(q, v)[0]) for q in normed]))
        if med > self.net_points:
            v *= math.sqrt(med / self.net_points)  # surface points scale ~ 1/voxel^2
            for _ in range(20):
                med = float(np.median([len(voxel_downsample(q, v)[0]) for q in normed]))
                if med <= self.net_points * 1.05:
                    break
                v *= 1.05
        self.net_voxel_ = float(v)
        train = []
        tick = time.perf_counter()
        with progress_task("pointnet preparing clouds", len(clouds), show) as t:
            for q, (_, src) in zip(normed, clouds):
                net = voxel_downsample(q, self.net_voxel_)[0]
                if len(net) < max(self.k + 1, 50):
                    raise InputError(src, f"only {len(net)} points remain on the network voxel grid")
                train.append((net, pca_normals_centroid(net, 10)))
                t.advance()
        phase_s["prepare"] = time.perf_counter() - tick
        gen = torch.Generator().manual_seed(self.seed)
        model = _build_model(input_dim(self.features), self.channels, self.n_layers, self.k)
        _init_params(model, gen)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        rng = np.random.default_rng(self.seed)
        # a fixed held-out synthetic batch (own random stream) to report the loss before/after training
        erng = np.random.default_rng([self.seed, 1])
        held = []
        for j in range(4):
            pts, nrm = train[j % len(train)]
            pts, nrm, mask = self._synth(pts, nrm, erng)
            pts, nrm, mask = self._augment(pts, nrm, mask, erng)
            held.append((*self._tensors(pts, nrm), torch.from_numpy(mask.astype(np.float32))))

        def heldout_loss() -> float:
            model.eval()
            with torch.no_grad():
                v = float(np.mean([float(_bce(model(f, x, nb)[1], y)) for f, x, nb, y in held]))
            model.train()
            return v

        loss_before = heldout_loss()
        losses = []
        model.train()
        tick = time.perf_counter()
        with progress_task("pointnet training", self.steps, show) as t:
            for step in range(self.steps):
                pts, nrm = train[int(rng.integers(len(train)))]
                mask = np.zeros(len(pts), dtype=bool)
                if rng.random() < self.anomaly_prob:
                    pts, nrm, mask = self._synth(pts, nrm, rng)
                pts, nrm, mask = self._augment(pts, nrm, mask, rng)
                f, x, nbr = self._tensors(pts, nrm)
                y = torch.from_numpy(mask.astype(np.float32))
                _, logit = model(f, x, nbr)
                loss = _bce(logit, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                t.advance()
        phase_s["train"] = time.perf_counter() - tick
        loss_after = heldout_loss()
        model.eval()
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
        bank_owner = owner[keep]
        self._nn = NearestNeighbors(self.bank_, "faiss")
        # synthetic validation from (at most VAL_CLOUDS of) the training clouds, each scored
        # against the bank rows that came from the other clouds (leave-one-cloud-out):
        # VAL_GOOD re-augmented good copies and VAL_ANOMALOUS copies with a training-type
        # synthetic anomaly per cloud (own random stream). It gives the reference distance,
        # the thresholds and, with fusion="auto", the head weight; no test data is involved.
        if len(train) > 1:
            vrng = np.random.default_rng([self.seed, 2])
            val_idx = np.unique(np.linspace(0, len(train) - 1, min(VAL_CLOUDS, len(train))).round().astype(int))
            val = []
            tick = time.perf_counter()
            with progress_task("pointnet validation", len(val_idx) * (VAL_GOOD + VAL_ANOMALOUS), show) as t:
                for i in val_idx:
                    p, nr = train[i]
                    others = self.bank_[bank_owner != i]
                    nn_i = NearestNeighbors(others if len(others) else self.bank_, "faiss")
                    for j in range(VAL_GOOD + VAL_ANOMALOUS):
                        q, qn, m = p, nr, np.zeros(len(p), dtype=bool)
                        if j >= VAL_GOOD:
                            q, qn, m = self._synth(p, nr, vrng)
                        ap, an, m = self._augment(q, qn, m, vrng)
                        fi, lg = self._features(ap, an)
                        val.append((ap, nn_i.search(fi, 1)[0][:, 0], lg, m))
                        t.advance()
            phase_s["validation"] = time.perf_counter() - tick
            good = [v for v in val if not v[3].any()]
            self.ref_distance_ = float(max(np.quantile(np.concatenate([v[1] for v in good]), 0.99), 1e-6))
            comps = [(pt, d / self.ref_distance_, _sigmoid(lg), m) for pt, d, lg, m in val]
            if self.fusion == "auto":
                self.head_weight_, table = select_head_weight(
                    [c[0] for c in comps], [c[1] for c in comps], [c[2] for c in comps], [c[3] for c in comps],
                    self.smooth_k, self.top_k)
                self.validation_ = {"head_weight_table": table, "n_clouds": len(comps),
                                   "n_anomalous": int(sum(c[3].any() for c in comps))}
            sm = [self._point_scores(pt, pr, hd)[0] for pt, pr, hd, m in comps if not m.any()]
            self.threshold_ = float(max(topk_mean(v, self.top_k) for v in sm))
            self.point_threshold_ = float(np.quantile(np.concatenate(sm), 0.999))
        else:
            warnings.warn("one training cloud: no held-out scores, thresholds set to +inf", stacklevel=2)
        if self.fpfh_weight > 0:  # the FPFH bank whose normalised scores are added (see fuse_scores)
            from defectforge.detect3d.bank import FPFHBank

            tick = time.perf_counter()
            self.fpfh_ = FPFHBank(scale=self.scale, voxel=self.voxel, max_scale_ratio=self.max_scale_ratio,
                                  seed=self.seed, progress=self.progress).fit([p for p, _ in clouds])
            phase_s["fpfh"] = time.perf_counter() - tick
        self.fit_info_ = {"n_train": len(clouds), "net_voxel": self.net_voxel_,
                         "net_points": [int(len(p)) for p, _ in train], "bank_rows": int(len(self.bank_)),
                         "loss_first": float(np.mean(losses[:10])) if losses else float("nan"),
                         "loss_last": float(np.mean(losses[-10:])) if losses else float("nan"),
                         "losses": [float(v) for v in losses], "heldout_loss_before": loss_before,
                         "heldout_loss_after": loss_after, "category_scale": self.sdn_.category_scale,
                         "head_weight": self.effective_head_weight(), "fpfh_weight": float(self.fpfh_weight),
                         "phase_s": phase_s,
                         "validation": self.validation_}
        return self

    def _features(self, pts: np.ndarray, nrm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prototype features, head logits) of the network points."""
        import torch

        f, x, nbr = self._tensors(pts, nrm)
        with torch.no_grad():
            feat, logit = self.model_(f, x, nbr, all_layers=self.proto_layers == "all")
        return feat.numpy().astype(np.float32), logit.numpy().astype(np.float64)

    def effective_head_weight(self) -> float:
        """Weight of the head probability added to the prototype score (0 for "proto")."""
        return 0.0 if self.fusion == "proto" else self.head_weight_

    def _point_scores(self, net: np.ndarray, proto: np.ndarray, head: np.ndarray, weight: float | None = None,
                      top_k: int | None = None, tree: cKDTree | None = None) -> tuple[np.ndarray, float]:
        """Smoothed network-point scores and the object score (top-k mean)."""
        if self.fusion == "head" and weight is None:
            s = head
        else:
            s = proto + (self.effective_head_weight() if weight is None else weight) * head
        s = knn_smooth(net, s, self.smooth_k, tree)
        return s, topk_mean(s, self.top_k if top_k is None else top_k)

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
        s, maps = fuse_scores(s, maps, fp.pred_score, fp.anomaly_map, self.norms(), self.fpfh_norms(),
                              float(self.fpfh_weight))
        # each normalised part is at most 1 on the held-out good clouds, so 1 + w bounds their sum
        thr = 1.0 + float(self.fpfh_weight)
        return Prediction(s, maps, s >= thr, [m >= thr for m in maps])

    def norms(self) -> tuple[float, float]:
        """(object, point) reference scores of the network part (its held-out thresholds)."""
        return self.threshold_, self.point_threshold_

    def fpfh_norms(self) -> tuple[float, float]:
        """(object, point) reference scores of the fused FPFH bank."""
        return self.fpfh_.threshold_, self.fpfh_.point_threshold_

    def _components(self, cloud: Any, i: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(normalised input points, network points, prototype score, head probability)."""
        p, src = as_cloud(cloud, i)
        npts, net = self._coarse(p, src)
        feat, logit = self._features(net, pca_normals_centroid(net, 10))
        d, _ = self._nn.search(feat, 1)
        return npts, net, d[:, 0] / self.ref_distance_, _sigmoid(logit)

    def score_variants(self, clouds: Iterable[Any], head_weights: Iterable[float],
                       top_ks: Iterable[int]) -> dict[tuple[float, int], tuple[np.ndarray, list[np.ndarray]]]:
        """(object scores, point maps) for every (head weight, top_k) pair from one network
        pass per cloud: for choosing these settings on validation clouds (never on test)."""
        self._check_fitted()
        hw, tk = sorted({float(w) for w in head_weights}), sorted({int(k) for k in top_ks})
        out = {(w, k): ([], []) for w in hw for k in tk}
        with self._torch_threads():
            for i, c in enumerate(clouds):
                npts, net, proto, head = self._components(c, i)
                tree = cKDTree(net)
                for w in hw:
                    s, _ = self._point_scores(net, proto, head, weight=w, tree=tree)
                    m = idw_interpolate(net, s, npts, k=3, tree=tree).astype(np.float32)
                    for k in tk:
                        out[(w, k)][0].append(topk_mean(s, k))
                        out[(w, k)][1].append(m)
        return {key: (np.asarray(v[0]), v[1]) for key, v in out.items()}

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, Any]:
        import torch

        info = {k: v for k, v in self.fit_info_.items() if k != "losses"}
        return {"category_scale": self.sdn_.category_scale, "net_voxel": self.net_voxel_,
                "state_dict": {k: v.detach().clone() for k, v in self.model_.state_dict().items()},
                "bank": torch.from_numpy(self.bank_), "ref_distance": self.ref_distance_,
                "head_weight_": self.head_weight_, "validation": self.validation_,
                "threshold": self.threshold_, "point_threshold": self.point_threshold_, "fit_info": info,
                "fpfh": None if self.fpfh_ is None else self.fpfh_.to_entry()}

    def _set_state(self, state: dict[str, Any]) -> None:
        from defectforge.bank.knn import NearestNeighbors

        self.sdn_ = self._new_sdn()
        self.sdn_.category_scale = float(state["category_scale"])
        self.net_voxel_ = float(state["net_voxel"])
        model = _build_model(input_dim(self.features), self.channels, self.n_layers, self.k)
        model.load_state_dict(state["state_dict"])
        model.eval()
        self.model_ = model
        self.bank_ = state["bank"].numpy().astype(np.float32)
        width = self.channels * (self.n_layers + 1 if self.proto_layers == "all" else 1)
        if self.bank_.ndim != 2 or self.bank_.shape[1] != width:
            raise ValueError("bank width does not match the network channels")
        self.ref_distance_ = float(state["ref_distance"])
        self.head_weight_ = float(state.get("head_weight_", self.head_weight))
        self.validation_ = dict(state.get("validation", {}))
        self.threshold_ = float(state["threshold"])
        self.point_threshold_ = float(state["point_threshold"])
        self.fit_info_ = dict(state.get("fit_info", {}))
        self._nn = NearestNeighbors(self.bank_, "faiss")
        self.fpfh_ = None
        if state.get("fpfh") is not None:
            from defectforge.detect3d.bank import FPFHBank

            self.fpfh_ = FPFHBank.from_entry(state["fpfh"], progress=self.progress)
        elif float(self.fpfh_weight) > 0:
            raise ValueError("the model has fpfh_weight > 0 but no FPFH bank")
