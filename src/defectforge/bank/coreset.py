"""Greedy k-center coreset (PatchCore / ExDD memory-bank subsampling), exact, with work per
step that shrinks as the bank grows.

The greedy rule is the usual one: start from a seeded random row, then repeatedly add the
row farthest from the rows chosen so far (farthest-first traversal). Done naively every
step reads every row (``O(N)`` per step, ``O(N k)`` in all: 57 minutes for PatchCore's
10 % of 915,000 rows). Here the rows are put once in a ball tree (:mod:`._balltree`:
every node has a centre ``m`` and a radius ``rho`` that bounds its rows) and every node
also keeps the largest current distance-to-the-chosen-set ``M`` of its rows. When a new
centre ``c`` is added, a node whose rows cannot get closer to ``c`` than they already are
to the chosen set is skipped whole; the triangle inequality gives
``||x - c|| >= ||m - c|| - rho >= M >= mind(x)`` for each of its rows. As the bank grows
``M`` shrinks, so fewer nodes are opened per step: late steps touch a few leaves near the
new centre. The farthest row is read off the root (each node keeps its maximum and the
lowest row index attaining it).

Exactness: distances are computed in float64 as ``sqrt(sum((x - c)^2))`` with NumPy's
pairwise summation order, i.e. bit for bit the distances of
:func:`greedy_kcenter_bruteforce`, and a skip needs the bound to win by a relative margin
of ``1e-9`` (far above the rounding of the bound itself), so a skipped row would never
have changed. The selection is therefore identical to the brute force, index for index,
ties (duplicates, equal distances) resolved to the lowest row index in both.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def coreset_size(n_rows: int, ratio: float, minimum: int = 0) -> int:
    """Target size ``max(minimum, floor(n_rows * ratio))``, at least 1 and at most ``n_rows``."""
    if n_rows <= 0:
        return 0
    return int(min(n_rows, max(1, minimum, int(np.floor(n_rows * ratio)))))


def greedy_kcenter(x: np.ndarray, n: int, seed: int = 0, progress: Callable[[int], None] | None = None,
                   leaf_size: int = 4, tree_dim: int = 32, stats: dict | None = None) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-center (farthest-first), exact.

    ``x`` is ``(N, d)``; float32 rows are used as they are (no copy), other types are
    converted to float32 (exactly, for float16). The first row is drawn from
    ``numpy.random.default_rng(seed)``. Stops early when every row coincides with a chosen
    row (duplicates), so the result can be shorter than ``n``. ``progress`` is called with
    the number of rows chosen so far (about every 1 % and at the end). ``stats``, when
    given, receives ``rows_visited`` (distance computations) and ``nodes_visited``.
    """
    from defectforge.bank import _balltree as bt

    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    x = np.ascontiguousarray(x)
    N = x.shape[0]
    n = int(min(n, N))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    start = int(np.random.default_rng(seed).integers(N))
    y, margin = principal_rows(x, tree_dim)
    tree = bt.build(y, leaf_size, x.shape[1], margin)
    state = bt.new_state(tree, N)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = start
    k = 1
    every = max(64, n // 100)
    counts = np.zeros(2, dtype=np.int64)
    while True:
        # add chosen[k-1] as a centre, read the farthest row off the root, repeat
        k, done = bt.add_centres(x, y, tree, state, chosen, k, n, every, counts)
        if progress:
            progress(k)
        if done:
            break
    if stats is not None:
        stats["rows_visited"] = int(counts[0])
        stats["nodes_visited"] = int(counts[1])
    return chosen[:k].copy()


def principal_rows(x: np.ndarray, dim: int, chunk: int = 65536) -> tuple[np.ndarray, float]:
    """``(y, margin)``: the rows of ``x`` in their first ``dim`` principal axes (float32),
    and a bound on how much the rounding of ``y`` can add to a distance between two rows.

    ``V`` has orthonormal columns, so ``||V^T (a - b)|| <= ||a - b||``: a distance in ``y``
    (less ``margin``) never exceeds the true distance, which is what the ball tree needs.
    The axes come from a fixed stride sample of at most 20,000 rows (no randomness)."""
    N, d = x.shape
    p = int(min(dim, d))
    if p <= 0 or N == 0:
        return np.zeros((N, 0), np.float32), 0.0
    sample = x[:: max(1, N // 20000)].astype(np.float64)
    mu = sample.mean(0)
    sample -= mu
    _, vecs = np.linalg.eigh(sample.T @ sample)
    v = np.ascontiguousarray(vecs[:, ::-1][:, :p])
    y = np.empty((N, p), np.float32)
    biggest = 0.0
    for s in range(0, N, chunk):
        part = x[s:s + chunk].astype(np.float64) - mu
        biggest = max(biggest, float(np.sqrt(np.einsum("ij,ij->i", part, part).max())))
        y[s:s + chunk] = part @ v
    # float32 rounding of each y row (relative 2^-24 of its norm <= ||x - mu||) plus float64 error
    margin = 4.0 * (2.0 ** -24 + 1e-12 * d) * biggest + 1e-30
    return y, margin


def greedy_kcenter_bruteforce(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Reference implementation (all rows every step, float64); for tests and small inputs."""
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
