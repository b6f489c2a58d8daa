"""A small point transformer trained on synthetic 3D anomalies (Synthesis4AD-style, CPU-sized).

Model (:class:`PointTransformer`, plain PyTorch): per-point input ``[normal,
FPFH(k=24) / 100]`` (36 values; the local histogram makes small surface changes visible
at the coarse network resolution; absolute coordinates are left out so the head cannot
memorise where defects were synthesised, positions enter only as relative offsets) ->
linear embedding -> ``n_layers`` pre-norm blocks of kNN vector attention (``k``
neighbours; weights ``softmax(W (q_i - k_j + pe_ij))`` over the neighbours, values
``v_j + pe_ij``, ``pe`` an MLP of the relative position ``p_i - p_j``) plus a point-wise
MLP -> ``C``-d point features -> a per-point anomaly logit (supervised head).

Training (:meth:`PointTransformerAD.fit`) uses good clouds only:

- SDN (see :mod:`defectforge.detect3d.common`): centre, per-category scale, and a fixed
  network voxel in normalised space, chosen once at fit so the median training cloud
  keeps about ``net_points`` points; every later cloud uses the same voxel.
- Each step draws a training cloud and, with probability ``anomaly_prob``, applies one
  synth3d operator from ``train_ops`` with parameters drawn uniformly from
  ``train_ranges`` (MPAS-style synthesis on the fly, exact point masks); augmentations:
  a random rotation up to ``rotate_deg`` about a random axis, Gaussian jitter
  (``jitter`` in normalised units), random point dropout up to ``dropout``.
- Loss: per-point binary cross-entropy with the positive weight ``n_neg / n_pos`` (<= 20).

Inference: point features of the normal training clouds form the prototype bank
(greedy coreset to ``bank_ratio``); a point's prototype score is the distance to its
nearest prototype divided by a reference distance (99th percentile of held-out good
points: each training cloud re-augmented and matched against the other clouds'
prototypes). ``fusion``: ``"proto"`` (prototype score only), ``"head"`` (sigmoid of the
logit) or ``"fused"`` (their sum, default). Point scores are smoothed over ``smooth_k``
neighbours, interpolated (IDW, 3-NN) to every input point; the object score is the mean
of the ``top_k`` largest network-point scores.

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
import warnings
from typing import Any, Iterable, Iterator

import numpy as np
from scipy.spatial import cKDTree

from defectforge.detect.base import Detector, Prediction
from defectforge.detect3d.persist import PersistentDetector
from defectforge.detect3d.common import SDN, as_cloud, idw_interpolate, knn_smooth, topk_mean
from defectforge.detect3d.fpfh import pca_normals_centroid
from defectforge.errors import ConfigError, InputError

FPFH_K = 24
IN_DIM = 3 + 33
TRAIN_OPS = ("bump", "dent", "scratch")
TRAIN_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "bump": {"radius": (0.03, 0.06), "depth": (0.006, 0.015)},
    "dent": {"radius": (0.03, 0.06), "depth": (0.006, 0.015)},
    "scratch": {"length": (0.1, 0.2), "width": (0.015, 0.025), "depth": (0.003, 0.006)},
}


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

        def forward(self, feats, xyz, nbr):
            x = self.embed(feats)
            for b in self.blocks:
                x = b(x, xyz, nbr)
            f = self.norm(x)
            return f, self.head(f).squeeze(-1)

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


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= max(np.linalg.norm(axis), 1e-12)
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


class PointTransformerAD(PersistentDetector, Detector):
    """Point transformer trained on synthetic anomalies, scored by prototype matching."""

    name = "pointnet"

    def __init__(self, channels: int = 32, n_layers: int = 3, k: int = 16, net_points: int = 2048,
                 steps: int = 300, lr: float = 2e-3, anomaly_prob: float = 0.8,
                 train_ops: tuple[str, ...] = TRAIN_OPS, train_ranges: dict | None = None,
                 rotate_deg: float = 15.0, jitter: float = 0.002, dropout: float = 0.1,
                 bank_ratio: float = 0.25, fusion: str = "fused", smooth_k: int = 8, top_k: int = 20,
                 scale: str = "category", voxel: float = 0.02, max_scale_ratio: float = 4.0,
                 seed: int = 0, threads: int | None = 1, progress: bool = False):
        from defectforge.synth3d.operators import OPERATORS

        self.channels, self.n_layers, self.k = int(channels), int(n_layers), int(k)
        self.net_points, self.steps, self.lr = int(net_points), int(steps), float(lr)
        self.anomaly_prob = float(anomaly_prob)
        self.train_ops = tuple(train_ops)
        self.train_ranges = {o: dict(r) for o, r in (train_ranges or TRAIN_RANGES).items()}
        self.rotate_deg, self.jitter, self.dropout = float(rotate_deg), float(jitter), float(dropout)
        self.bank_ratio, self.fusion = float(bank_ratio), fusion
        self.smooth_k, self.top_k, self.seed = int(smooth_k), int(top_k), int(seed)
        self.threads = None if threads is None else int(threads)
        self.progress = progress
        for o in self.train_ops:
            if o not in OPERATORS:
                raise ConfigError(f"unknown synthesis operator {o!r}; choose from {', '.join(OPERATORS)}")
        if fusion not in ("proto", "head", "fused"):
            raise ConfigError(f"fusion must be 'proto', 'head' or 'fused', got {fusion!r}")
        if self.channels < 4 or self.n_layers < 1 or self.k < 2 or self.net_points < 64 or self.steps < 0:
            raise ConfigError("channels >= 4, n_layers >= 1, k >= 2, net_points >= 64 and steps >= 0 are required")
        if not 0 < self.bank_ratio <= 1:
            raise ConfigError(f"bank_ratio must be in (0, 1], got {self.bank_ratio}")
        self.sdn = SDN(scale=scale, voxel=voxel, max_points=max(net_points * 4, 200), max_scale_ratio=max_scale_ratio)
        self.net_voxel: float | None = None
        self.model = None
        self.bank: np.ndarray | None = None
        self.ref_distance = 1.0
        self.threshold = float("inf")
        self.point_threshold = float("inf")
        self.fit_info: dict[str, Any] = {}
        self._nn = None

    def get_params(self) -> dict[str, Any]:
        return {"channels": self.channels, "n_layers": self.n_layers, "k": self.k, "net_points": self.net_points,
                "steps": self.steps, "lr": self.lr, "anomaly_prob": self.anomaly_prob,
                "train_ops": list(self.train_ops),
                "train_ranges": {o: {p: list(v) for p, v in r.items()} for o, r in self.train_ranges.items()},
                "rotate_deg": self.rotate_deg, "jitter": self.jitter, "dropout": self.dropout,
                "bank_ratio": self.bank_ratio, "fusion": self.fusion, "smooth_k": self.smooth_k, "top_k": self.top_k,
                "scale": self.sdn.scale, "voxel": self.sdn.voxel, "max_scale_ratio": self.sdn.max_scale_ratio,
                "seed": self.seed, "threads": self.threads}

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

        npts = self.sdn.normalise(points, source)
        net, _ = voxel_downsample(npts, self.net_voxel)
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
        local = fpfh_from_neighbours(pts, nrm, nbr[:, 1:kf + 1], dist[:, 1:kf + 1]) / 100.0
        nbr = nbr[:, :int(min(self.k, len(pts)))]
        feats = np.concatenate([nrm, local], axis=1)
        return (torch.from_numpy(feats.astype(np.float32)), torch.from_numpy(pts.astype(np.float32)),
                torch.from_numpy(nbr.astype(np.int64)))

    def _synth(self, pts: np.ndarray, nrm: np.ndarray, rng: np.random.Generator):
        from defectforge.synth3d.operators import SynthesisError, apply

        for _ in range(3):
            op = self.train_ops[int(rng.integers(len(self.train_ops)))]
            params = {p: float(rng.uniform(lo, hi)) for p, (lo, hi) in self.train_ranges.get(op, {}).items()}
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
        from defectforge.detect.coreset import coreset_size, greedy_kcenter
        from defectforge.detect.knn import NearestNeighbors
        from defectforge.synth3d.geometry import voxel_downsample

        clouds = [as_cloud(c, i) for i, c in enumerate(normal)]
        if not clouds:
            raise InputError(None, "no training clouds given")
        self.sdn.fit(clouds)
        normed = [self.sdn.normalise(p, s) for p, s in clouds]
        # network voxel: the median training cloud keeps about net_points points
        v = self.sdn.voxel
        med = float(np.median([len(voxel_downsample(q, v)[0]) for q in normed]))
        if med > self.net_points:
            v *= math.sqrt(med / self.net_points)  # surface points scale ~ 1/voxel^2
            for _ in range(20):
                med = float(np.median([len(voxel_downsample(q, v)[0]) for q in normed]))
                if med <= self.net_points * 1.05:
                    break
                v *= 1.05
        self.net_voxel = float(v)
        train = []
        for q, (_, src) in zip(normed, clouds):
            net = voxel_downsample(q, self.net_voxel)[0]
            if len(net) < max(self.k + 1, 50):
                raise InputError(src, f"only {len(net)} points remain on the network voxel grid")
            train.append((net, pca_normals_centroid(net, 10)))
        gen = torch.Generator().manual_seed(self.seed)
        model = _build_model(IN_DIM, self.channels, self.n_layers, self.k)
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
        with progress_task("pointnet training", self.steps, bool(self.progress)) as t:
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
        loss_after = heldout_loss()
        model.eval()
        self.model = model
        # prototype bank from the clean training clouds
        feats = [self._features(p, n)[0] for p, n in train]
        allf = np.concatenate(feats)
        n = coreset_size(len(allf), self.bank_ratio, minimum=1)
        self.bank = np.ascontiguousarray(allf[greedy_kcenter(allf, n, seed=self.seed)])
        self._nn = NearestNeighbors(self.bank, "faiss")
        # reference distance and thresholds from held-out (re-augmented, leave-one-out) good clouds
        obj, dists, heads, aug = [], [], [], []
        if len(train) > 1:
            owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(feats)])
            for i, (p, nr) in enumerate(train):
                ap, an, _ = self._augment(p, nr, np.zeros(len(p), bool), rng)
                fi, lg = self._features(ap, an)
                d, _ = NearestNeighbors(allf[owner != i], "faiss").search(fi, 1)
                dists.append(d[:, 0])
                heads.append(lg)
                aug.append(ap)
            self.ref_distance = float(max(np.quantile(np.concatenate(dists), 0.99), 1e-6))
            pscores = [self._combine(d, h) for d, h in zip(dists, heads)]
            sm = [knn_smooth(p, s, self.smooth_k) for p, s in zip(aug, pscores)]
            obj = [topk_mean(s, self.top_k) for s in sm]
            self.threshold = float(max(obj))
            self.point_threshold = float(np.quantile(np.concatenate(sm), 0.999))
        else:
            warnings.warn("one training cloud: no held-out scores, thresholds set to +inf", stacklevel=2)
        self.fit_info = {"n_train": len(clouds), "net_voxel": self.net_voxel,
                         "net_points": [int(len(p)) for p, _ in train], "bank_rows": int(len(self.bank)),
                         "loss_first": float(np.mean(losses[:10])) if losses else float("nan"),
                         "loss_last": float(np.mean(losses[-10:])) if losses else float("nan"),
                         "losses": [float(v) for v in losses], "heldout_loss_before": loss_before,
                         "heldout_loss_after": loss_after, "category_scale": self.sdn.category_scale}
        return self

    def _features(self, pts: np.ndarray, nrm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        f, x, nbr = self._tensors(pts, nrm)
        with torch.no_grad():
            feat, logit = self.model(f, x, nbr)
        return feat.numpy().astype(np.float32), logit.numpy().astype(np.float64)

    def _combine(self, dist: np.ndarray, logit: np.ndarray) -> np.ndarray:
        proto = dist / self.ref_distance
        head = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        if self.fusion == "proto":
            return proto
        if self.fusion == "head":
            return head
        return proto + head

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if self.model is None or self.bank is None:
            raise ConfigError("the detector is not fitted: call fit() or load() first")

    def predict(self, clouds: Iterable[Any]) -> Prediction:
        """Object scores and per-point scores (aligned with each input cloud's points)."""
        self._check_fitted()
        with self._torch_threads():
            return self._predict(clouds)

    def _predict(self, clouds: Iterable[Any]) -> Prediction:
        from defectforge.detect._progress import progress_task

        items = list(clouds)
        scores, maps = [], []
        with progress_task("pointnet scoring", len(items), bool(self.progress)) as t:
            for i, c in enumerate(items):
                p, src = as_cloud(c, i)
                npts, net = self._coarse(p, src)
                nrm = pca_normals_centroid(net, 10)
                feat, logit = self._features(net, nrm)
                d, _ = self._nn.search(feat, 1)
                s = self._combine(d[:, 0], logit)
                tree = cKDTree(net)
                s = knn_smooth(net, s, self.smooth_k, tree)
                scores.append(topk_mean(s, self.top_k))
                maps.append(idw_interpolate(net, s, npts, k=3, tree=tree).astype(np.float32))
                t.advance()
        s = np.asarray(scores, dtype=np.float64)
        return Prediction(s, maps, s >= self.threshold, [m >= self.point_threshold for m in maps])

    # ------------------------------------------------------------------ persistence
    def to_payload(self) -> dict[str, Any]:
        import torch

        self._check_fitted()
        info = {k: v for k, v in self.fit_info.items() if k != "losses"}
        return {"config": self.get_params(), "category_scale": self.sdn.category_scale, "net_voxel": self.net_voxel,
                "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "bank": torch.from_numpy(self.bank), "ref_distance": self.ref_distance,
                "threshold": self.threshold, "point_threshold": self.point_threshold, "fit_info": info}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], progress: bool = False) -> "PointTransformerAD":
        from defectforge.detect.knn import NearestNeighbors

        cfg = dict(payload["config"])
        cfg["train_ops"] = tuple(cfg["train_ops"])
        cfg["train_ranges"] = {o: {p: tuple(v) for p, v in r.items()} for o, r in cfg["train_ranges"].items()}
        m = cls(progress=progress, **cfg)
        m.sdn.category_scale = float(payload["category_scale"])
        m.net_voxel = float(payload["net_voxel"])
        model = _build_model(IN_DIM, m.channels, m.n_layers, m.k)
        model.load_state_dict(payload["state_dict"])
        model.eval()
        m.model = model
        m.bank = payload["bank"].numpy().astype(np.float32)
        if m.bank.ndim != 2 or m.bank.shape[1] != m.channels:
            raise ValueError("bank width does not match the network channels")
        m.ref_distance = float(payload["ref_distance"])
        m.threshold = float(payload["threshold"])
        m.point_threshold = float(payload["point_threshold"])
        m.fit_info = dict(payload.get("fit_info", {}))
        m._nn = NearestNeighbors(m.bank, "faiss")
        return m
