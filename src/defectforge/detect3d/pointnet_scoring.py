"""Prototype scoring of the point network: features, per-point and object scores, the
leave-one-cloud-out synthetic validation that calibrates them, and score variants for
choosing settings on validation clouds.

A network point's prototype score is the distance of its feature to the nearest
prototype (coreset of good training features) divided by a reference distance (the 99th
percentile on held-out good points); the head probability is added with weight
``head_weight`` for ``fusion`` "fused"/"auto" (the head alone for "head"). Scores are
smoothed over ``smooth_k`` neighbours; the object score is the mean of the ``top_k``
largest. :class:`PrototypeScoring` is a mixin of
:class:`~defectforge.detect3d.pointnet.PointTransformerAD`.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from scipy.spatial import cKDTree

from defectforge.detect3d.common import as_cloud, idw_interpolate, knn_smooth, topk_mean
from defectforge.detect3d.fpfh import pca_normals_centroid
from defectforge.detect3d.fusion import score_stats, select_head_weight
from defectforge.detect3d.pointnet_model import sigmoid

VAL_CLOUDS = 4
"""Leave-one-cloud-out validation uses at most this many training clouds (evenly spaced)."""
VAL_GOOD, VAL_ANOMALOUS = 2, 3


class PrototypeScoring:
    """Scoring methods shared by fit (validation) and predict."""

    def _validate(self, train: list[tuple[np.ndarray, np.ndarray]], bank_owner: np.ndarray, show: Any) -> None:
        """Leave-one-cloud-out synthetic validation from (at most VAL_CLOUDS of) the training
        clouds, each scored against the bank rows of the other clouds: VAL_GOOD re-augmented
        good copies and VAL_ANOMALOUS copies with a training-type anomaly per cloud (own
        random stream). Sets the reference distance, the thresholds, the held-out good
        statistics and, with fusion="auto", the head weight; no test data is involved."""
        from defectforge.detect._progress import progress_task

        vrng = np.random.default_rng([self.seed, 2])
        val_idx = np.unique(np.linspace(0, len(train) - 1, min(VAL_CLOUDS, len(train))).round().astype(int))
        data = self._data()
        val = []
        with progress_task("pointnet validation", len(val_idx) * (VAL_GOOD + VAL_ANOMALOUS), show) as t:
            for i in val_idx:
                p, nr = train[i]
                others = self.bank_[bank_owner != i]
                nn_i = self._nearest(others if len(others) else self.bank_)
                for j in range(VAL_GOOD + VAL_ANOMALOUS):
                    q, qn, m = p, nr, np.zeros(len(p), dtype=bool)
                    if j >= VAL_GOOD:
                        q, qn, m = data.synth(p, nr, vrng)
                    ap, an, m = data.augment(q, qn, m, vrng)
                    fi, lg = self._features(ap, an)
                    val.append((ap, nn_i.search(fi, 1)[0][:, 0], lg, m))
                    t.advance()
        good = [v for v in val if not v[3].any()]
        self.ref_distance_ = float(max(np.quantile(np.concatenate([v[1] for v in good]), 0.99), 1e-6))
        comps = [(pt, d / self.ref_distance_, sigmoid(lg), m) for pt, d, lg, m in val]
        if self.fusion == "auto":
            self.head_weight_, table = select_head_weight(
                [c[0] for c in comps], [c[1] for c in comps], [c[2] for c in comps], [c[3] for c in comps],
                self.smooth_k, self.top_k)
            self.validation_ = {"head_weight_table": table, "n_clouds": len(comps),
                                "n_anomalous": int(sum(c[3].any() for c in comps))}
        sm = [self._point_scores(pt, pr, hd)[0] for pt, pr, hd, m in comps if not m.any()]
        self.stats_ = score_stats([topk_mean(v, self.top_k) for v in sm], sm)
        self.threshold_, self.point_threshold_ = self.stats_["object_max"], self.stats_["point_q999"]

    def _features(self, pts: np.ndarray, nrm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prototype features, head logits) of the network points."""
        import torch

        f, x, nbr = self._tensors(pts, nrm)
        with torch.no_grad():
            feat, logit = self.model_(f, x, nbr, all_layers=self.proto_layers == "all")
        return feat.cpu().numpy().astype(np.float32), logit.cpu().numpy().astype(np.float64)

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

    def _components(self, cloud: Any, i: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(normalised input points, network points, prototype score, head probability)."""
        p, src = as_cloud(cloud, i)
        npts, net = self._coarse(p, src)
        feat, logit = self._features(net, pca_normals_centroid(net, 10))
        d, _ = self._nn.search(feat, 1)
        return npts, net, d[:, 0] / self.ref_distance_, sigmoid(logit)

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

