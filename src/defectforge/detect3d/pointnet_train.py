"""Training data and training loop of the point network (MPAS-style synthesis on the fly).

Each step draws a good training cloud (network points) and, with probability
``anomaly_prob``, applies one synth3d operator from ``ops`` with parameters drawn
uniformly from ``ranges`` (exact point masks). The default is the full MPAS range
(:data:`TRAIN_OPS`: small and large bumps/dents, pits, scratches, grooves, bends, cracks,
free-form bulges and sinks); :data:`UNSEEN_TRAIN_OPS` (local point and line types only)
is what the benchmark uses to test on never-seen types. Augmentations: a random rotation
up to ``rotate_deg`` about a random axis, Gaussian jitter (``jitter`` in normalised
units), random point dropout up to ``dropout``; normals are recomputed by PCA as at
prediction. Loss: per-point BCE with positive weight ``n_neg / n_pos`` (<= 20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from defectforge.detect3d.fpfh import pca_normals_centroid
from defectforge.detect3d.pointnet_model import bce

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


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= max(np.linalg.norm(axis), 1e-12)
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


@dataclass
class SyntheticAnomalies:
    """On-the-fly synthetic anomalies and augmentation of network points."""

    ops: tuple[str, ...] = TRAIN_OPS
    ranges: dict | None = None
    rotate_deg: float = 15.0
    jitter: float = 0.002
    dropout: float = 0.1

    def synth(self, pts: np.ndarray, nrm: np.ndarray, rng: np.random.Generator):
        """(points, normals, mask) with one anomaly (an empty mask after 3 failed tries)."""
        from defectforge.synth3d.operators import SynthesisError, apply

        ranges = self.ranges if self.ranges is not None else TRAIN_RANGES
        for _ in range(3):
            op = self.ops[int(rng.integers(len(self.ops)))]
            params = {p: float(rng.uniform(lo, hi)) for p, (lo, hi) in ranges.get(op, {}).items()}
            try:
                r = apply(op, pts, nrm, rng, **params)
            except SynthesisError:
                continue
            if r.mask.any():
                return r.points, r.normals, r.mask
        return pts, nrm, np.zeros(len(pts), dtype=bool)

    def augment(self, pts, nrm, mask, rng):
        keep = rng.random(len(pts)) >= rng.uniform(0, self.dropout)
        pts, nrm, mask = pts[keep], nrm[keep], mask[keep]
        if self.rotate_deg > 0:
            R = random_rotation(rng, self.rotate_deg)
            pts, nrm = pts @ R.T, nrm @ R.T
        if self.jitter > 0:
            pts = pts + np.clip(rng.normal(0, self.jitter, pts.shape), -3 * self.jitter, 3 * self.jitter)
        # normals as prediction computes them (PCA on the points the network sees), not the
        # operator's or the rotated ones: otherwise training clouds carry normal cues that test
        # clouds never have, and the head learns them instead of the geometry
        return pts, pca_normals_centroid(pts, 10), mask


def train_network(model, train: list[tuple[np.ndarray, np.ndarray]], data: SyntheticAnomalies,
                  inputs: Callable[[np.ndarray, np.ndarray], Any], *, steps: int, lr: float,
                  anomaly_prob: float, seed: int, task: Any = None) -> dict[str, Any]:
    """Train ``model`` in place for ``steps`` Adam steps on ``train`` (network points and
    normals) with synthetic anomalies; ``inputs(points, normals)`` gives the model's input
    tensors. Returns ``losses`` and the loss on a fixed held-out synthetic batch (own random
    stream) before and after training. ``task.advance()`` is called once per step."""
    import torch

    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    erng = np.random.default_rng([seed, 1])
    held = []
    for j in range(4):
        pts, nrm = train[j % len(train)]
        pts, nrm, mask = data.augment(*data.synth(pts, nrm, erng), erng)
        held.append((*inputs(pts, nrm), torch.from_numpy(mask.astype(np.float32)).to(device)))

    def heldout_loss() -> float:
        model.eval()
        with torch.no_grad():
            v = float(np.mean([float(bce(model(f, x, nb)[1], y)) for f, x, nb, y in held]))
        model.train()
        return v

    before = heldout_loss()
    losses = []
    model.train()
    for _ in range(steps):
        pts, nrm = train[int(rng.integers(len(train)))]
        mask = np.zeros(len(pts), dtype=bool)
        if rng.random() < anomaly_prob:
            pts, nrm, mask = data.synth(pts, nrm, rng)
        pts, nrm, mask = data.augment(pts, nrm, mask, rng)
        f, x, nbr = inputs(pts, nrm)
        loss = bce(model(f, x, nbr)[1], torch.from_numpy(mask.astype(np.float32)).to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if task is not None:
            task.advance()
    after = heldout_loss()
    model.eval()
    return {"losses": losses, "heldout_loss_before": before, "heldout_loss_after": after}
