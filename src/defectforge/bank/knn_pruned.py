"""Exact k-nearest-neighbour search that skips most of the bank, for CPU (numba).

A flat search compares every query row with every bank row (a matrix product: 600 ms per
BSData image against PatchCore's 91,513-row bank on two cores). Patch features have a low
effective dimension, so a cheap lower bound rules out almost every pair:

- every bank row ``b`` is split, about the bank mean, into its coordinates on the bank's
  first ``p`` principal axes (``b_p``) and the length of the rest (``r_b``); for a query
  ``q`` the same. Then ``|q - b|^2 >= |q_p - b_p|^2 + (r_q - r_b)^2`` (Pythagoras on the
  axes, the reverse triangle inequality on the rest);
- the bank rows are grouped into clusters (k-means on ``b_p``); a cluster's ball (centre,
  radius in the ``p`` axes) and its range of ``r_b`` bound all its rows at once.

Per query the clusters are visited nearest bound first; a cluster whose bound exceeds the
k-th best distance found so far ends the search, and inside a cluster a row gets its full
distance only when its own bound is below that distance. The bounds are compared with a
relative margin far above their float32 rounding, so no row that could be among the k
nearest is ever skipped: the result is the flat search's (the k smallest
``sum((q - b)^2)``, ties to the lower bank index), computed directly as a float32 sum of
squares rather than faiss's ``|q|^2 - 2 q.b + |b|^2`` (which loses digits to cancellation),
so distances agree with faiss to float32 rounding. The clustering only changes the speed.
Measured in ``docs/bench/scale.md`` (``bench/bench_knn.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

import defectforge.bank._numba  # noqa: F401  (threading layer without OpenMP)

_SLACK = 1e-3  # relative margin on squared bounds (their float32 rounding is ~1e-6)


@njit(cache=True, nogil=True, fastmath=True)
def _sq(a, b):
    acc = np.float32(0.0)
    for i in range(a.shape[0]):
        w = a[i] - b[i]
        acc += w * w
    return acc


@njit(cache=True, nogil=True)
def _insert(bd, bi, d, j):
    """Insert ``(d, j)`` into the sorted top-k lists ``bd``/``bi`` (ties: lower index first)."""
    k = bd.shape[0]
    if d > bd[k - 1] or (d == bd[k - 1] and j >= bi[k - 1]):
        return
    t = k - 1
    while t > 0 and (d < bd[t - 1] or (d == bd[t - 1] and j < bi[t - 1])):
        bd[t] = bd[t - 1]
        bi[t] = bi[t - 1]
        t -= 1
    bd[t] = d
    bi[t] = j


@njit(cache=True, nogil=True)
def _scan(i, c, q, qp, qr, B, bp, rn, orig, starts, tol, lim, bd, bi):
    """The rows of cluster ``c`` into query ``i``'s top-k lists; returns the new limit and
    how many rows got their full distance."""
    k = bd.shape[0]
    seen = 0
    for j in range(starts[c], starts[c + 1]):
        w = qr[i] - rn[j]
        if np.float64(_sq(qp[i], bp[j])) + w * w > lim:
            continue
        seen += 1
        d = _sq(q[i], B[j])
        if d <= bd[k - 1]:
            _insert(bd, bi, d, orig[j])  # bank rows are in cluster order; ties by original index
            lim = np.float64(bd[k - 1]) * (1.0 + _SLACK) + tol
    return lim, seen


@njit(cache=True, nogil=True)
def _search_one(i, q, qp, qr, B, bp, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts):
    """The k nearest bank rows of query ``i`` (module doc); ``tol``: absolute margin."""
    K = cp.shape[0]
    k = out_d.shape[1]
    clb = np.empty(K, np.float64)
    for c in range(K):
        dc = np.sqrt(np.float64(_sq(qp[i], cp[c])))
        a = max(0.0, dc - crad[c])
        g = max(0.0, rlo[c] - qr[i], qr[i] - rhi[c])
        clb[c] = a * a + g * g
    bd = np.full(k, np.inf, np.float32)
    bi = np.full(k, np.int64(-1))
    # the cluster of the smallest bound first: its rows usually give a tight limit, and only
    # the clusters whose bound is within it are then sorted (the order changes the speed only)
    c0 = np.argmin(clb)
    lim, seen = _scan(i, c0, q, qp, qr, B, bp, rn, orig, starts, tol, np.inf, bd, bi)
    cand = np.empty(K, np.int64)
    n = 0
    for c in range(K):
        if c != c0 and clb[c] <= lim:
            cand[n] = c
            n += 1
    cand = cand[:n]
    for c in cand[np.argsort(clb[cand])]:
        if clb[c] > lim:
            break
        lim, more = _scan(i, c, q, qp, qr, B, bp, rn, orig, starts, tol, lim, bd, bi)
        seen += more
    out_d[i] = bd
    out_i[i] = bi
    counts[i] = seen


@njit(cache=True, nogil=True, parallel=True)
def _search_par(q, qp, qr, B, bp, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts):
    for i in prange(q.shape[0]):
        _search_one(i, q, qp, qr, B, bp, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts)


@njit(cache=True, nogil=True)
def _search_seq(q, qp, qr, B, bp, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts):
    for i in range(q.shape[0]):
        _search_one(i, q, qp, qr, B, bp, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts)


def _kmeans(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster labels of ``x`` (faiss k-means, a few iterations; the clusters change the
    speed of the search only, never its result)."""
    import faiss

    km = faiss.Kmeans(x.shape[1], n_clusters, niter=10, seed=int(seed) + 1, verbose=False,
                      max_points_per_centroid=64)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0].astype(np.int64)


class PrunedIndex:
    """``PrunedIndex(bank).search(queries, k) -> (squared dist (n, k) float32, idx (n, k))``,
    the same neighbours as a flat search (see the module doc). ``axes``: principal axes of
    the bound; ``cluster_size``: bank rows per cluster (both change the speed only)."""

    def __init__(self, bank: np.ndarray, axes: int = 16, cluster_size: int = 128, seed: int = 0):
        b = np.ascontiguousarray(bank, dtype=np.float32)
        M, D = b.shape
        self.mu = b.mean(0, dtype=np.float64)
        c = b - self.mu
        sample = c[np.random.default_rng(seed).permutation(M)[:20000]] if M > 20000 else c
        p = int(min(axes, D, max(1, M - 1)))
        self.P = np.linalg.svd(sample, full_matrices=False)[2][:p].T.copy()  # (D, p) float64
        proj = c @ self.P
        rest = np.sqrt(np.maximum((c * c).sum(1) - (proj * proj).sum(1), 0.0))
        K = int(max(1, min(M, round(M / max(1, cluster_size)))))
        lab = _kmeans(proj.astype(np.float32), K, seed) if K > 1 else np.zeros(M, np.int64)
        order = np.argsort(lab, kind="stable")
        self.order = order
        lab = lab[order]
        self.B = np.ascontiguousarray(b[order])
        self.bp = np.ascontiguousarray(proj[order], dtype=np.float32)
        self.rn = rest[order]
        counts = np.bincount(lab, minlength=K)
        keep = counts > 0
        self.starts = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        K = int(keep.sum())
        self.cp = np.empty((K, p), np.float32)
        self.crad = np.empty(K, np.float64)
        self.rlo = np.empty(K, np.float64)
        self.rhi = np.empty(K, np.float64)
        for t in range(K):
            s, e = self.starts[t], self.starts[t + 1]
            self.cp[t] = proj[order[s:e]].mean(0)
            dev = self.bp[s:e].astype(np.float64) - self.cp[t].astype(np.float64)
            self.crad[t] = np.sqrt((dev * dev).sum(1).max()) * (1.0 + 1e-6) + 1e-6
            self.rlo[t], self.rhi[t] = self.rn[s:e].min(), self.rn[s:e].max()
        # absolute margin: the float rounding of a bound scales with the rows' squared length
        self.tol = 1e-6 * float((c * c).sum(1).max()) + 1e-12
        self.last_fraction = float("nan")  # share of bank rows that got a full distance, last search

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(min(k, len(self.B)))
        c = q - self.mu
        qp64 = c @ self.P
        qr = np.sqrt(np.maximum((c * c).sum(1) - (qp64 * qp64).sum(1), 0.0))
        qp = np.ascontiguousarray(qp64, dtype=np.float32)
        out_d = np.empty((len(q), k), np.float32)
        out_i = np.empty((len(q), k), np.int64)
        seen = np.empty(len(q), np.int64)
        run = _search_par if len(q) >= 64 else _search_seq  # a parallel launch costs more than a few rows
        run(q, qp, qr, self.B, self.bp, self.rn, self.order, self.starts, self.cp, self.crad, self.rlo, self.rhi,
            self.tol, out_d, out_i, seen)
        self.last_fraction = float(seen.sum()) / max(1, len(q) * len(self.B))
        return out_d, out_i
