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

Per query the clusters' bounds are computed and the nearest ``FIRST_CLUSTERS`` (by bound)
searched first, which usually gives a tight limit (the k-th best distance found so far).
Then every cluster is visited once for all the queries of a block (``QUERY_BLOCK`` queries per
thread) whose limit its bound may still beat, so that a cluster's rows are read from memory
once per block instead of once per query (at PatchCore's bank size the per-query order spent
most of its time waiting for memory). Inside a cluster a row gets its full distance only when
its own bound (computed for all the cluster's rows at once, vectorised) is below the limit.
The bounds are compared with a relative margin far above their float32 rounding, so no row
that could be among the k nearest is ever skipped, whatever the order of the work: the result
is the flat search's (the k smallest ``sum((q - b)^2)``, ties to the lower bank index),
computed directly as a float32 sum of squares rather than faiss's ``|q|^2 - 2 q.b + |b|^2``
(which loses digits to cancellation), so distances agree with faiss to float32 rounding. The clustering only changes the speed.
Measured in ``docs/bench/scale.md`` (``bench/bench_knn.py``).
"""

from __future__ import annotations

import numba
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


@njit(cache=True, nogil=True, fastmath=True)
def _bounds(i, s, e, qp, qr, bpT, rn, lb):
    """``lb[j - s]``: the lower bound ``|q_p - b_p|^2 + (r_q - r_b)^2`` of query ``i`` and every
    bank row ``j`` in ``s:e``, in float32, vectorised over the rows (``bpT``: the rows' principal
    coordinates, one axis per row of the array)."""
    n = e - s
    q = np.float32(qr[i])
    rns = rn[s:e]  # slices: indexing them with 0 <= j < n needs no wrap-around test, so the loops vectorise
    lbv = lb[:n]
    for j in range(n):
        w = q - rns[j]
        lbv[j] = w * w
    for t in range(bpT.shape[0]):
        a = qp[i, t]
        row = bpT[t, s:e]
        for j in range(n):
            w = a - row[j]
            lbv[j] += w * w


@njit(cache=True, nogil=True)
def _scan(i, c, q, qp, qr, B, bpT, rn, orig, starts, tol, lim, bd, bi, lb):
    """The rows of cluster ``c`` into query ``i``'s top-k lists; returns the new limit and
    how many rows got their full distance. ``lb``: scratch of at least the cluster's size."""
    k = bd.shape[0]
    seen = 0
    s = starts[c]
    _bounds(i, s, starts[c + 1], qp, qr, bpT, rn, lb)
    for j in range(s, starts[c + 1]):
        if lb[j - s] > lim:
            continue
        seen += 1
        d = _sq(q[i], B[j])
        if d <= bd[k - 1]:
            _insert(bd, bi, d, orig[j])  # bank rows are in cluster order; ties by original index
            lim = np.float64(bd[k - 1]) * (1.0 + _SLACK) + tol
    return lim, seen


FIRST_CLUSTERS = 2  # clusters searched query by query, nearest bound first, before the cluster-major pass
QUERY_BLOCK = 1024  # queries searched together (their cluster bounds: 8 bytes x clusters each)


@njit(cache=True, nogil=True)
def _cluster_bounds(i, qp, qr, cp, crad, rlo, rhi, clb):
    """``clb[c]``: a lower bound of query ``i``'s squared distance to every row of cluster ``c``
    (its ball on the principal axes and its range of rest lengths)."""
    for c in range(cp.shape[0]):
        dc = np.sqrt(np.float64(_sq(qp[i], cp[c])))
        a = max(0.0, dc - crad[c])
        g = max(0.0, rlo[c] - qr[i], qr[i] - rhi[c])
        clb[c] = a * a + g * g


@njit(cache=True, nogil=True)
def _search_block(q, qp, qr, B, bpT, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts, big, probes,
                  i0, i1):
    """The k nearest bank rows of queries ``i0:i1`` (module doc; ``tol``: absolute margin),
    cluster by cluster: first each query's own ``FIRST_CLUSTERS`` nearest clusters (by bound),
    which usually give a tight limit; then every cluster once, with all the queries whose limit
    it may still beat, so that a cluster's rows are read from memory once per block of queries,
    not once per query (the order changes the speed only). ``probes > 0``: approximate, each
    query searches only its ``probes`` nearest clusters (by bound) and stops there."""
    K = cp.shape[0]
    n_first = FIRST_CLUSTERS if probes <= 0 else probes
    nq = i1 - i0
    lb = np.empty(big, np.float32)
    clb = np.empty((nq, K), np.float64)
    lim = np.empty(nq, np.float64)
    for t in range(nq):
        i = i0 + t
        _cluster_bounds(i, qp, qr, cp, crad, rlo, rhi, clb[t])
        out_d[i] = np.inf
        out_i[i] = -1
        lim[t] = np.inf
        counts[i] = 0
        for v in range(K):  # approximate: past the probes only while fewer than k rows were found
            if v >= n_first and (probes <= 0 or out_i[i, out_i.shape[1] - 1] >= 0):
                break
            c0 = np.argmin(clb[t])
            if clb[t, c0] > lim[t]:
                break
            lim[t], more = _scan(i, c0, q, qp, qr, B, bpT, rn, orig, starts, tol, lim[t], out_d[i], out_i[i], lb)
            counts[i] += more
            clb[t, c0] = np.inf  # done
    if probes > 0:
        return
    # the (cluster, query) pairs still open, grouped by cluster
    first = np.zeros(K + 1, np.int64)
    for t in range(nq):
        for c in range(K):
            if clb[t, c] <= lim[t]:
                first[c + 1] += 1
    for c in range(K):
        first[c + 1] += first[c]
    who = np.empty(first[K], np.int64)
    fill = first[:K].copy()
    for t in range(nq):
        for c in range(K):
            if clb[t, c] <= lim[t]:
                who[fill[c]] = t
                fill[c] += 1
    for c in range(K):
        for u in range(first[c], first[c + 1]):
            t = who[u]
            if clb[t, c] > lim[t]:  # the limit fell since
                continue
            i = i0 + t
            lim[t], more = _scan(i, c, q, qp, qr, B, bpT, rn, orig, starts, tol, lim[t], out_d[i], out_i[i], lb)
            counts[i] += more


@njit(cache=True, nogil=True)
def _search_seq(q, qp, qr, B, bpT, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts, big, probes,
                i0, i1):
    """Queries ``i0:i1`` in blocks of at most ``QUERY_BLOCK``."""
    for a in range(i0, i1, QUERY_BLOCK):
        _search_block(q, qp, qr, B, bpT, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts, big, probes,
                      a, min(i1, a + QUERY_BLOCK))


@njit(cache=True, nogil=True, parallel=True)
def _search_par(q, qp, qr, B, bpT, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts, big, probes,
                parts):
    n = q.shape[0]
    for h in prange(parts):
        _search_seq(q, qp, qr, B, bpT, rn, orig, starts, cp, crad, rlo, rhi, tol, out_d, out_i, counts, big, probes,
                    h * n // parts, (h + 1) * n // parts)


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
    the bound; ``cluster_size``: bank rows per cluster (both change the speed only).

    ``probes > 0`` makes it **approximate** (an inverted-file search over the same clusters,
    like faiss's ``IndexIVFFlat`` with ``nprobe``): each query searches only the ``probes``
    clusters of smallest bound, so a nearest row in another cluster is missed; the distances
    returned are still true distances to the rows returned (never smaller than the exact)."""

    def __init__(self, bank: np.ndarray, axes: int = 16, cluster_size: int = 128, seed: int = 0, probes: int = 0):
        if int(probes) < 0:
            raise ValueError(f"probes must be >= 0 (0: exact), got {probes}")
        self.probes = int(probes)
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
        self.bpT = np.ascontiguousarray(proj[order].T, dtype=np.float32)  # (p, M): bounds vectorise over rows
        self.rn = rest[order].astype(np.float32)
        counts = np.bincount(lab, minlength=K)
        keep = counts > 0
        self.starts = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        self.largest = int(counts.max())  # rows of the largest cluster: the search's scratch size
        K = int(keep.sum())
        self.cp = np.empty((K, p), np.float32)
        self.crad = np.empty(K, np.float64)
        self.rlo = np.empty(K, np.float64)
        self.rhi = np.empty(K, np.float64)
        for t in range(K):
            s, e = self.starts[t], self.starts[t + 1]
            self.cp[t] = proj[order[s:e]].mean(0)
            dev = self.bpT[:, s:e].T.astype(np.float64) - self.cp[t].astype(np.float64)
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
        args = (q, qp, qr, self.B, self.bpT, self.rn, self.order, self.starts, self.cp, self.crad, self.rlo, self.rhi,
                self.tol, out_d, out_i, seen, self.largest, self.probes)
        parts = int(min(numba.get_num_threads(), len(q) // 32))  # one range of queries per thread
        if parts >= 2:
            _search_par(*args, parts)
        else:  # a parallel launch costs more than a few rows
            _search_seq(*args, 0, len(q))
        self.last_fraction = float(seen.sum()) / max(1, len(q) * len(self.B))
        return out_d, out_i
