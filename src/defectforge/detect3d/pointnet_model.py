"""The point network of :class:`~defectforge.detect3d.pointnet.PointTransformerAD`: its
per-point inputs, the kNN vector-attention transformer, deterministic init and the loss.

Inputs (``features``: a comma-separated subset of):

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
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from defectforge.detect3d.shape import SHAPE_KS, local_shape_features
from defectforge.errors import ConfigError

FPFH_K = 24
FEATURE_WIDTHS = {"normal": 3, "fpfh": 33, "shape": 5 * len(SHAPE_KS)}


def parse_features(features: str) -> tuple[str, ...]:
    """Validated input parts of a ``features`` spec such as ``"normal,fpfh,shape"``."""
    parts = tuple(f.strip() for f in str(features).split(",") if f.strip())
    bad = [f for f in parts if f not in FEATURE_WIDTHS]
    if not parts or bad or len(set(parts)) != len(parts):
        raise ConfigError(f"features must be a comma-separated subset of {', '.join(FEATURE_WIDTHS)}, got {features!r}")
    return parts


def input_dim(features: str) -> int:
    return sum(FEATURE_WIDTHS[f] for f in parse_features(features))


def point_inputs(pts: np.ndarray, nrm: np.ndarray, features: str, k: int, unit: float, device: str = "cpu"):
    """(inputs (N, input_dim), positions (N, 3), neighbour indices (N, k)) as torch tensors
    on ``device``; ``unit`` is the network voxel (the shape spread is relative to 4 x it)."""
    import torch

    from defectforge.detect3d.fpfh import fpfh_from_neighbours

    tree = cKDTree(pts)
    kf = int(min(FPFH_K, len(pts) - 1))
    dist, nbr = tree.query(pts, k=max(k, kf + 1), workers=-1)
    parts = []
    for name in parse_features(features):
        if name == "normal":
            parts.append(nrm)
        elif name == "fpfh":
            parts.append(fpfh_from_neighbours(pts, nrm, nbr[:, 1:kf + 1], dist[:, 1:kf + 1]) / 100.0)
        else:  # "shape": spread relative to the network voxel, so O(1) values
            parts.append(local_shape_features(pts, nrm, SHAPE_KS, unit=4 * unit, tree=tree))
    nbr = nbr[:, :int(min(k, len(pts)))]
    feats = np.concatenate(parts, axis=1)
    return (torch.from_numpy(feats.astype(np.float32)).to(device), torch.from_numpy(pts.astype(np.float32)).to(device),
            torch.from_numpy(nbr.astype(np.int64)).to(device))


def build_model(in_dim: int, channels: int, n_layers: int, k: int):
    """A new :class:`PointTransformer` (``(inputs, xyz, nbr) -> (features, logits)``)."""
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


def init_params(model, generator) -> None:
    """Deterministic init from ``generator`` (a CPU ``torch.Generator``; the model is on the
    CPU): Linear U(+-1/sqrt(fan_in)), zero bias; norms 1/0."""
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


def bce(logit, y):
    """Per-point BCE with positive weight n_neg / n_pos (at most 20)."""
    import torch

    n_pos = float(y.sum())
    pw = torch.tensor(min(20.0, (len(y) - n_pos) / n_pos) if n_pos > 0 else 1.0, device=logit.device)
    return torch.nn.functional.binary_cross_entropy_with_logits(logit, y, pos_weight=pw)


def sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
