"""Greedy k-center coreset (PatchCore / ExDD memory-bank subsampling), exact, at
matrix-kernel speed instead of one memory pass over every row per step.

The greedy rule is the usual one: start from a seeded random row, then repeatedly add the
row farthest from the rows chosen so far (farthest-first traversal). Done naively every
step reads every row (``O(N)`` memory traffic per step: 57 minutes for PatchCore's 10 % of
915,000 rows). Here (:mod:`._lazy`):

- the rows are put in blocks of near rows (``block`` rows each, split along far-apart
  directions), and every block only remembers an upper bound of its rows' distances to the
  chosen set; a tournament tree over the blocks finds the block that may hold the farthest
  row, and only that block is brought up to date, against every centre added since its
  last visit at once. A block far from the action is visited rarely, then with many
  centres; centres whose distance to the block's ball exceeds the bound are skipped whole;
- a row-centre pair is first tested on the rows' first ``dim`` principal axes (a proven
  lower bound of the true distance, less its rounding; for all the block's rows and the
  visit's centres at once, as a small matrix product), then on the full float32 distance
  with its rounding bound; only pairs that may move the row get the exact float64 distance.

Exactness: every stored distance is the exact float64 ``sqrt(sum((x - c)^2))`` in NumPy's
pairwise summation order, i.e. bit for bit the distances of
:func:`greedy_kcenter_bruteforce`; a test only skips a pair when a bound proves it cannot
lower the row's distance; ties (duplicates, equal distances) go to the lowest row index in
both. The selection is therefore identical to the brute force, index for index.
Measured in ``docs/bench/scale.md``.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import numpy as np


def coreset_size(n_rows: int, ratio: float, minimum: int = 0, maximum: int | None = None) -> int:
    """Target size ``max(minimum, min(floor(n_rows * ratio), maximum))``, at least 1 and at
    most ``n_rows`` (``maximum=None``: no cap). Greedy k-center is a prefix rule (the first
    ``k`` rows of a longer choice are the choice of ``k``), so a capped bank is the first
    ``maximum`` rows of the uncapped one."""
    if n_rows <= 0:
        return 0
    size = int(np.floor(n_rows * ratio))
    if maximum is not None:
        size = min(size, int(maximum))
    return int(min(n_rows, max(1, minimum, size)))


def greedy_kcenter(x: np.ndarray, n: int, seed: int = 0, progress: Callable[[int], None] | None = None,
                   block: int = 128, dim: int = 16, overwrite_x: bool = False,
                   stats: dict | None = None, threads: int | None = None) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-center (farthest-first), exact.

    ``x`` is ``(N, d)``; float32 rows are used as they are, other types are converted to
    float32 (exactly, for float16). The first row is drawn from
    ``numpy.random.default_rng(seed)``. Stops early when every row coincides with a chosen
    row (duplicates), so the result can be shorter than ``n``. ``progress`` is called with
    the number of rows chosen so far (about every 1 % and at the end). ``block``, ``dim`` and
    ``threads`` change the speed only, never the result (``threads``: 1, or 2 to share the rows
    of every large block visit with a second thread; default numba's thread count within the
    process's CPUs). ``overwrite_x=True`` lets the rows be reordered in place (a writable
    float32 ``x`` is then not copied; its content is undefined afterwards). ``stats``, when
    given, receives ``exact_distances``, ``pairs_tested`` (row-centre pairs given the
    principal-axis bound), ``centres_skipped`` (by the block test), ``block_visits`` and
    ``worker_exact_distances`` (those of the second thread).

    ``x`` may also be a :class:`defectforge.bank.mapped.MappedRows` (rows in a file mapping,
    reordered in place like ``overwrite_x=True``): the work then runs in bounded pieces (setup
    by chunks, the permutation by sequential passes, the first pass over all rows by groups
    of blocks, then at most 128 block visits at a time) with the mapping's resident pages
    released between them. The result is the same.
    """
    from defectforge.bank._blocks import block_order, permute_rows, principal_rows
    from defectforge.bank._lazy import LazyState
    from defectforge.bank.mapped import MappedRows

    mapped = x if isinstance(x, MappedRows) else None
    release = mapped.release if mapped is not None else None
    x = mapped.array if mapped is not None else np.asarray(x)
    N = x.shape[0]
    n = int(min(n, N))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    start = int(np.random.default_rng(seed).integers(N))
    block = int(max(1, block))
    if mapped is None and not (overwrite_x and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable):
        x = np.array(x, dtype=np.float32, order="C")  # a private copy (float16 converts exactly)
    y, eps = principal_rows(x, dim, release=release)
    perm = block_order(y, block)  # near rows together, judged on the principal axes (speed only)
    if mapped is None or not mapped.permute(perm):
        if mapped is not None:  # no disk for the sequential passes: in place, the mapping fully resident
            warnings.warn(f"no free space in {os.path.dirname(mapped.path)} to reorder the coreset rows by "
                          "sequential passes; reordering them in place (more memory)", ResourceWarning, stacklevel=2)
        permute_rows(x, perm)
    permute_rows(y, perm)  # in place, as x: no second copy of the principal rows
    eps = eps[perm]
    state = LazyState(x, perm, n, start, block, y, eps, threads=threads)
    every = max(64, n // 100)
    if release is not None:
        state.prime(release)
    piece, visits = (every, 1 << 62) if release is None else (16, 128)
    shown = 0
    while True:
        done = state.run(piece, visits)
        if release is not None:
            release()
        if progress and (done or state.k // every > shown):
            shown = state.k // every
            progress(state.k)
        if done:
            break
    if stats is not None:
        for key, v in zip(("exact_distances", "pairs_tested", "centres_skipped", "block_visits"), state.stats):
            stats[key] = int(v)
        stats["worker_exact_distances"] = int(state.worker_buffers[-1][0]) if state.par else 0
    return state.chosen[:state.k].copy()


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
