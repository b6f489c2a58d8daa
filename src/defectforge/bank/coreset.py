"""Greedy k-center coreset (PatchCore / ExDD memory-bank subsampling), exact and fast.

The greedy rule is the usual one: start from a seeded random row, then repeatedly add
the row farthest from the rows chosen so far (farthest-first traversal). Each step must
look at every row, so the cost is memory bandwidth: this implementation keeps it to one
read of the (projected) rows per step by working in cache-sized chunks. Per chunk it
fuses ``||x||^2 - 2 x.c + ||c||^2``, the running minimum and the chunk maximum, so the
next farthest row is found from the chunk maxima without another pass (anomalib instead
materialises an ``N x d`` difference matrix per step). Squared distances are used
throughout (same order, no square roots). Select on a low-dimensional random projection
(``projection_dim``) to cut the bytes per step further; the bank keeps full rows.

The result is identical to the textbook loop (:func:`greedy_kcenter_bruteforce`), ties
resolved to the lowest index in both.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def coreset_size(n_rows: int, ratio: float, minimum: int = 0) -> int:
    """Target size ``max(minimum, floor(n_rows * ratio))``, at least 1 and at most ``n_rows``."""
    if n_rows <= 0:
        return 0
    return int(min(n_rows, max(1, minimum, int(np.floor(n_rows * ratio)))))


def greedy_kcenter(x: np.ndarray, n: int, seed: int = 0,
                   progress: Callable[[int], None] | None = None, chunk: int = 16384) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-center (farthest-first).

    ``x`` is ``(N, d)`` (float32 is used). The first row is drawn from
    ``numpy.random.default_rng(seed)``. Stops early when every row coincides with a
    chosen row (duplicates), so the result can be shorter than ``n``. ``progress`` is
    called with the number of rows chosen so far (every 64 steps and at the end).
    """
    from threadpoolctl import threadpool_limits

    # One BLAS thread: each step is a memory-bound matrix-vector product on a chunk, and
    # waking BLAS threads ~20 times per step costs more than it gains (6x slower on a
    # busy 2-core machine). The limit is restored on return.
    with threadpool_limits(1, user_api="blas"):
        return _greedy(x, n, seed, progress, chunk)


def _greedy(x: np.ndarray, n: int, seed: int, progress: Callable[[int], None] | None, chunk: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    N = x.shape[0]
    n = int(min(n, N))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    start = int(rng.integers(N))
    sq = np.einsum("ij,ij->i", x, x)
    mind = np.full(N, np.inf, dtype=np.float32)
    bounds = list(range(0, N, chunk))
    cmax = np.empty(len(bounds), dtype=np.float32)
    buf = np.empty(min(chunk, N), dtype=np.float32)
    chosen = np.empty(n, dtype=np.int64)
    i = start
    k = 0
    while True:
        chosen[k] = i
        k += 1
        if progress and (k % 64 == 0 or k == n):
            progress(k)
        if k == n:
            break
        c = x[i].copy()
        cc = float(c @ c)
        for b, s in enumerate(bounds):
            e = min(s + chunk, N)
            t = buf[: e - s]
            np.matmul(x[s:e], c, out=t)
            t *= -2.0
            t += sq[s:e]
            t += cc
            m = mind[s:e]
            np.minimum(m, t, out=m)
            if s <= i < e:
                m[i - s] = 0.0
            cmax[b] = m.max()
        b = int(np.argmax(cmax))
        if cmax[b] <= 0.0:
            break  # every remaining row duplicates a chosen one
        s = bounds[b]
        i = s + int(np.argmax(mind[s:min(s + chunk, N)]))
    if progress and k < n:
        progress(k)
    return chosen[:k]


def greedy_kcenter_bruteforce(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Reference implementation (all rows every step); for tests and small inputs."""
    x = np.asarray(x, dtype=np.float64)
    N = x.shape[0]
    n = int(min(n, N))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = [int(rng.integers(N))]
    mind = np.linalg.norm(x - x[idx[0]], axis=1)
    mind[idx[0]] = 0.0
    while len(idx) < n:
        i = int(np.argmax(mind))
        if mind[i] <= 0:
            break
        idx.append(i)
        mind = np.minimum(mind, np.linalg.norm(x - x[i], axis=1))
    return np.asarray(idx, dtype=np.int64)
