"""Lazy, blocked farthest-first traversal for :func:`defectforge.bank.coreset.greedy_kcenter`
(compiled with numba; cached on disk after the first use).

The rows come in block order (:func:`._blocks.block_order`: near rows together) and are cut into
blocks of ``B`` consecutive rows. Every block remembers how many of
the chosen centres its rows have been compared with (``synced``) and the largest
distance-to-the-chosen-set of its rows at that point, with the lowest row index attaining
it. Distances only shrink as centres are added, so a block's remembered maximum is an
upper bound of its true one. A tournament tree over the blocks gives the block with the
largest ``(bound, -row)``; if that block is not up to date it is brought up to date (its
rows compared with every centre added since its last visit) and the tree is
asked again; once the top block is up to date its row is the farthest row of all, ties
resolved to the lowest index (a stale block's bound can only fall).

Bringing a block up to date runs proven tests, cheapest first (:func:`_sync`): the block's
ball on the first principal axes against each centre (a centre that far cannot move any
row), then for every row and every remaining centre at once a lower bound of their distance
on those axes, from a small matrix product (``|a|^2 + |c|^2 - 2 a.c`` less the product's
rounding bound; in float32 with proven slack, vectorised, :func:`._visit._row_bounds`; the
least bound of each group of 16 centres first, so that whole groups are skipped), then the
float32 distance with its rounding bound. Only the pairs no test rules out (the row may be at
least as close to the new centre as to its nearest chosen one) get the exact float64
distance, computed in NumPy's pairwise order (:func:`._exact.pair_dist`), so every stored
distance is bit for bit the brute force's.
Blocks far from the action are visited rarely and then with many centres at once. The
centres' principal rows, norms and rounding bounds are copied, in the order chosen, into one
table (``Cy``), so that a visit reads them in sequence rather than scattered across ``Y``.
The row work of a visit is in :mod:`._visit`; with two threads (``LazyState(threads=2)``,
the default on a multi-core CPU) a second thread takes rows of every large visit, 16 at a
time, from a shared counter (hand-off through acquire/release atomics, :mod:`._spin`: a few
microseconds, where numba's own thread pool took ~150 us a launch). Rows are independent, so
the distances, and the choice, do not depend on which thread did what.
Measured in ``docs/bench/scale.md``.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit

import defectforge.bank._numba  # noqa: F401  (threading layer without OpenMP)
from defectforge.bank._visit import _PAD, SLACK32, _visit_rows, _worker, _ysq


@njit(cache=True, nogil=True)
def _better(v1, a1, v2, a2):
    return v1 > v2 or (v1 == v2 and a1 < a2)


@njit(cache=True, nogil=True)
def _set_leaf(tv, ta, tb, P, b, v, a):
    i = P + b
    tv[i] = v
    ta[i] = a
    tb[i] = b
    i //= 2
    while i >= 1:
        lft = 2 * i
        rgt = lft + 1
        if _better(tv[rgt], ta[rgt], tv[lft], ta[lft]):
            tv[i], ta[i], tb[i] = tv[rgt], ta[rgt], tb[rgt]
        else:
            tv[i], ta[i], tb[i] = tv[lft], ta[lft], tb[lft]
        i //= 2


@njit(cache=True, nogil=True)
def _put_centre(Y, sqn, nrm, eps, r, Cy, k):
    """Row ``Cy[k]``: row ``r``'s principal coordinates, squared norm, norm and rounding bound
    (rounded up to float32), so that visits read the centres in order instead of across ``Y``."""
    p = Y.shape[1]
    for i in range(p):
        Cy[k, i] = Y[r, i]
    Cy[k, p] = sqn[r]
    Cy[k, p + 1] = nrm[r]
    Cy[k, p + 2] = np.float32(eps[r] * (1.0 + 2.0 ** -20))


PAR_PAIRS = 1024  # a visit with fewer row-centre pairs stays on one thread (read by LazyState.run)
#: for tests: in every shared visit the main thread waits until the worker has taken rows before
#: it takes any (read by LazyState.run); the choice is the same, only who does what is fixed
WORKER_FIRST = False


@njit(cache=True, nogil=True)
def _sync(x, Y, sqn, nrm, gam, eps, eps_max, plan, s, e, C, Cy, j0, j1, mind, orig, ybc, ybr, bound, scratch, sel,
          YcT, nc, ncn, lb, gmin, counts, pj):
    """Compare rows ``s:e`` with centres ``j0:j1``; return the block's new maximum and its
    row (original index).

    Tests, cheapest first, each a proven bound (the slack terms are far above the rounding
    of the float64 sums they guard): a centre whose distance on the principal axes to the
    block's ball there (centre ``ybc``, radius ``ybr``) exceeds ``bound`` (an upper bound of
    every row's distance to the chosen set) plus both rounding bounds cannot move any row;
    then per row the matrix-product bound of :func:`_row_bounds` for every remaining centre,
    the float32 distance with its rounding bound, and the exact distance."""
    p = Y.shape[1]
    lim = bound * (1.0 + 1e-9) + ybr + eps_max
    cnt = 0
    for q in range(j0, j1):
        t = _ysq(Cy, q, ybc)
        r_ = lim + Cy[q, p + 2]
        if t * (1.0 - 1e-9) > r_ * r_:
            continue
        sel[cnt] = q
        for i in range(p):
            YcT[i, cnt] = Cy[q, i]
        nc[cnt] = Cy[q, p]
        ncn[cnt] = Cy[q, p + 1]
        cnt += 1
    counts[2] += j1 - j0 - cnt
    if cnt > 0:
        counts[1] += (e - s) * cnt
        ng = (cnt + 15) // 16
        for j in range(cnt, ng * 16):  # padding columns: zero rows far from everything
            for i in range(p):
                YcT[i, j] = 0.0
            nc[j] = _PAD
            ncn[j] = 0.0
        _visit_rows(pj, x, Y, sqn, nrm, gam, eps, eps_max, plan, s, e, C, mind, sel, YcT, nc, ncn, cnt, ng, lb, gmin,
                    scratch, counts)
    best = -1.0
    arg = orig[s]
    for r in range(s, e):
        if mind[r] > best or (mind[r] == best and orig[r] < arg):
            best = mind[r]
            arg = orig[r]
    return best, arg


@njit(cache=True, nogil=True)
def _sync_blocks(x, Y, sqn, nrm, gam, eps, eps_max, plan, B, C, Cy, k, mind, orig, ybc, ybr, synced, tv, ta, tb, P,
                 scratch, sel, YcT, nc, ncn, lb, gmin, counts, pj, b0, b1):
    """Bring blocks ``b0:b1`` up to date with the first ``k`` centres and put their new
    maxima in the tree."""
    N = x.shape[0]
    for b in range(b0, b1):
        if synced[b] >= k:
            continue
        s = b * B
        e = min(N, s + B)
        v, a = _sync(x, Y, sqn, nrm, gam, eps, eps_max, plan, s, e, C, Cy, synced[b], k, mind, orig, ybc[b], ybr[b],
                     tv[P + b], scratch, sel, YcT, nc, ncn, lb, gmin, counts, pj)
        synced[b] = k
        counts[3] += 1
        _set_leaf(tv, ta, tb, P, b, v, a)


@njit(cache=True, nogil=True)
def _run(x, Y, sqn, nrm, gam, eps, eps_max, plan, B, C, Cy, chosen, k, n, every, mind, orig, where, ybc, ybr, synced,
         tv, ta, tb, P, scratch, sel, YcT, nc, ncn, lb, gmin, counts, max_visits, pj):
    visits = 0
    while True:
        if k >= n:
            return k, 1
        b = tb[1]
        if synced[b] < k:
            if visits >= max_visits:
                return k, 0  # resumable: the next call goes on from this block
            _sync_blocks(x, Y, sqn, nrm, gam, eps, eps_max, plan, B, C, Cy, k, mind, orig, ybc, ybr, synced, tv, ta,
                         tb, P, scratch, sel, YcT, nc, ncn, lb, gmin, counts, pj, b, b + 1)
            visits += 1
            continue
        if tv[1] <= 0.0:
            return k, 1  # every remaining row duplicates a chosen one
        r = where[ta[1]]
        chosen[k] = ta[1]
        _put_centre(Y, sqn, nrm, eps, r, Cy, k)
        C[k] = x[r]
        k += 1
        if k % every == 0:
            return k, 0


@njit(cache=True, nogil=True)
def _y_balls(Y, B, ybc, ybr):
    """Centre (float64 mean) and radius (rounded up) of every block's rows on the principal
    axes."""
    N, p = Y.shape
    for b in range(ybc.shape[0]):
        s = b * B
        e = min(N, s + B)
        for i in range(p):
            acc = 0.0
            for r in range(s, e):
                acc += Y[r, i]
            ybc[b, i] = acc / (e - s)
        rad = 0.0
        for r in range(s, e):
            t = 0.0
            for i in range(p):
                w = np.float64(Y[r, i]) - ybc[b, i]
                t += w * w
            if t > rad:
                rad = t
        ybr[b] = math.sqrt(rad) * (1.0 + 1e-9) + 1e-300


def _alias_free(n: int) -> int:
    """Columns for a ``(p, n)`` float32 array read a column at a time: ``n`` rounded up to 16
    (one 64-byte line), plus 16 where that leaves an even number of lines, so the row stride
    is an odd number of cache lines and a column's ``p`` values fall in different cache sets.
    With a stride of a multiple of 4 KiB (``n`` = 16,384 or 163,840, the default caps) every
    value of a column maps to the same set and the bounds ran ~20 % slower (measured)."""
    lines = (int(n) + 15) // 16
    return 16 * (lines + 1 - lines % 2)


class LazyState:
    """Everything the traversal keeps between calls of :meth:`run` (for progress). ``x``:
    the rows already in block order (``orig[i]`` is the original index of row ``i``);
    ``Y``/``eps``: their :func:`._blocks.principal_rows`, in the same order. ``threads``: 2 or
    more runs :func:`_worker` in a second thread during :meth:`run` (default: numba's thread
    count, which follows ``NUMBA_NUM_THREADS``); the result is the same."""

    def __init__(self, x: np.ndarray, orig: np.ndarray, n: int, start: int, block: int, Y: np.ndarray,
                 eps: np.ndarray, threads: int | None = None):
        from defectforge.bank._exact import pairwise_plan

        N, d = x.shape
        self.x, self.n, self.B = x, int(n), int(block)
        self.orig = np.ascontiguousarray(orig, dtype=np.int64)
        self.where = np.empty(N, np.int64)
        self.where[self.orig] = np.arange(N)
        self.plan = pairwise_plan(d)
        self.Y, self.eps = np.ascontiguousarray(Y, dtype=np.float32), np.ascontiguousarray(eps, dtype=np.float64)
        self.eps_max = float(self.eps.max()) if N else 0.0
        p = self.Y.shape[1]
        # squared norms on the principal axes rounded down by SLACK32, norms rounded up by it, in
        # float32 (in chunks: no float64 copy of Y; the float64 sums' own error is ~1e-15)
        self.sqn = np.empty(N, np.float32)
        self.nrm = np.empty(N, np.float32)
        for s in range(0, N, 65536):
            y64 = self.Y[s:s + 65536].astype(np.float64)
            sq = np.einsum("ij,ij->i", y64, y64)
            self.sqn[s:s + 65536] = sq * (1.0 - SLACK32)
            self.nrm[s:s + 65536] = np.sqrt(sq) * (1.0 + SLACK32)
        # a float32 dot product of p terms, any order: within gamma |a| |c| (products and sums rounded)
        self.gam = (p + 2) * 2.0 ** -24 / (1.0 - (p + 2) * 2.0 ** -24)
        nb = (N + self.B - 1) // self.B
        self.ybc = np.empty((nb, p), np.float64)
        self.ybr = np.empty(nb, np.float64)
        _y_balls(self.Y, self.B, self.ybc, self.ybr)
        self.P = 1 << max(0, math.ceil(math.log2(max(nb, 1))))
        self.tv = np.full(2 * self.P, -1.0)
        self.ta = np.full(2 * self.P, np.iinfo(np.int64).max, np.int64)
        self.tb = np.zeros(2 * self.P, np.int64)
        self.mind = np.full(N, np.inf)
        self.synced = np.zeros(nb, np.int64)
        for b in range(nb):  # blocks not yet seen: bound +inf
            _set_leaf(self.tv, self.ta, self.tb, self.P, b, np.inf, int(self.orig[b * self.B]))
        self.C = np.empty((self.n, d), np.float32)
        self.sel, self.YcT, self.nc, self.ncn = self._visit_buffers()
        self.scratch, self.lb, self.gmin, self.counts = self._thread_buffers()
        self.chosen = np.empty(self.n, np.int64)
        self.Cy = np.empty((self.n, p + 3), np.float32)  # the centres' principal rows, norms, bounds
        r = int(self.where[start])
        self.chosen[0], self.C[0] = start, x[r]
        _put_centre(self.Y, self.sqn, self.nrm, self.eps, r, self.Cy, 0)
        self.k = 1
        if threads is None:  # numba's count (NUMBA_NUM_THREADS, numba.set_num_threads), within this
            import numba  # process's CPUs: a spinning second thread must never wait for a core

            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = min(numba.get_num_threads(), cpus)
        self.par = int(threads) >= 2
        if self.par:  # the worker's own scratch row, bounds, group minima and counters
            self.worker_buffers = self._thread_buffers()
        # the hand-off to the worker: sequence, worker first, rows to, centres, groups, done, listening, next row
        self.pj = np.zeros(8, np.int64)

    def _visit_buffers(self) -> tuple:
        """A visit's centres, written by the main thread and read by both: indices, principal
        rows transposed, squared norms and norms (padded to groups of 16)."""
        p, cols = self.Y.shape[1], 16 * ((self.n + 15) // 16)
        return (np.empty(self.n, np.int64), np.empty((p, _alias_free(self.n)), np.float32),
                np.empty(cols, np.float32), np.empty(cols, np.float32))

    def _thread_buffers(self) -> tuple:
        """One thread's own: a float64 scratch row, the bounds, the groups' least bounds, and the
        counters (exact distances, row-centre pairs bounded, centres skipped, visits)."""
        cols = 16 * ((self.n + 15) // 16)
        return (np.empty(self.x.shape[1], np.float64), np.empty(cols, np.float32), np.empty(cols // 16, np.float32),
                np.zeros(4, np.int64))

    @property
    def stats(self) -> np.ndarray:
        """The counters of both threads."""
        return self.counts + (self.worker_buffers[-1] if self.par else 0)

    def _args(self) -> tuple:
        return (self.x, self.Y, self.sqn, self.nrm, self.gam, self.eps, self.eps_max, self.plan, self.B, self.C)

    def prime(self, release, blocks: int = 1024) -> None:
        """Compare every block with the first centre, ``blocks`` blocks at a time with
        ``release()`` after each piece (what the first step of :meth:`run` would do in one
        go, touching every row; same result)."""
        nb = self.synced.shape[0]
        for b0 in range(0, nb, blocks):
            _sync_blocks(*self._args(), self.Cy, self.k, self.mind, self.orig, self.ybc, self.ybr, self.synced,
                         self.tv, self.ta, self.tb, self.P, self.scratch, self.sel, self.YcT, self.nc, self.ncn,
                         self.lb, self.gmin, self.counts, self.pj, b0, min(nb, b0 + blocks))
            release()

    def run(self, every: int, max_visits: int = 1 << 62) -> bool:
        """Choose rows until ``every`` divides the count, ``n`` are chosen or all rows are
        covered, or until ``max_visits`` blocks were brought up to date (then mid-choice, to
        be resumed by the next call); True when finished."""
        worker = None
        if self.par:
            import threading

            self.pj[:] = 0
            scratch, lb, gmin, counts = self.worker_buffers
            worker = threading.Thread(target=_worker, name="defectforge-coreset", daemon=True,
                                      args=(self.pj, *self._args()[:8], self.C, self.mind, self.sel, self.YcT,
                                            self.nc, self.ncn, lb, gmin, scratch, counts))
            self.pj[1] = int(bool(WORKER_FIRST))
            worker.start()
            self.pj[6] = max(1, PAR_PAIRS)  # a worker listens: visits of this many pairs or more share their rows
        try:
            k, done = _run(*self._args(), self.Cy, self.chosen, self.k, self.n, int(every), self.mind, self.orig,
                           self.where, self.ybc, self.ybr, self.synced, self.tv, self.ta, self.tb, self.P,
                           self.scratch, self.sel, self.YcT, self.nc, self.ncn, self.lb, self.gmin, self.counts,
                           int(max_visits), self.pj)
        finally:
            if worker is not None:
                self.pj[6] = 0
                self.pj[0] = -1  # stop (no job is pending: a visit waits until all its rows are done)
                worker.join()
        self.k = int(k)
        return bool(done)
