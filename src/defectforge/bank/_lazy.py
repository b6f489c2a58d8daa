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
ball against each centre, an annulus through the block centre per row, the distance on the
first principal axes less its rounding, the float32 distance with its rounding bound. Only
the pairs no test rules out (the row may be at least as close to the new centre as to its
nearest chosen one) get the exact float64 distance, computed in NumPy's pairwise order
(:func:`._exact.pair_dist`), so every stored distance is bit for bit the brute force's.
Blocks far from the action are visited rarely and then with many centres at once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

import defectforge.bank._numba  # noqa: F401  (threading layer without OpenMP)
from defectforge.bank._exact import _dist_to, pair_dist


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


@njit(cache=True, nogil=True, fastmath=True)
def _sq32(x, r, q):
    """``sum((x[r] - x[q])^2)`` in float32, any order (vectorised): within ``(d + 4) 2^-24``
    relative of the exact value whatever the order."""
    acc = np.float32(0.0)
    for i in range(x.shape[1]):
        w = x[r, i] - x[q, i]
        acc += w * w
    return acc


@njit(cache=True, nogil=True, fastmath=True)
def _sq64(a, C, q):
    """``sum((a - C[q])^2)`` in float64, any order (vectorised): within ``d 2^-52`` relative."""
    acc = 0.0
    for i in range(a.shape[0]):
        w = np.float64(a[i]) - np.float64(C[q, i])
        acc += w * w
    return acc


@njit(cache=True, nogil=True)
def _update_rows(x, Y, eps, eps_max, plan, r0, r1, cpos, sel, YcT, dms, cnt, slack, mind, h, scratch, acc, counts):
    """Bring rows ``r0:r1`` up to date with the ``cnt`` centres ``sel`` (sorted by their
    distance ``dms`` to the block centre; ``YcT`` their principal-axis rows, transposed)."""
    p = Y.shape[1]
    p1 = min(p, 4)
    # a float32 sum of p squared differences is within (p + 4) 2^-24 of the exact one
    fac = 1.0 + (p + 8) * 2.0 ** -24
    facx = 1.0 + (x.shape[1] + 8) * 2.0 ** -23
    for r in range(r0, r1):
        m = mind[r]
        # skip a pair when its distance in the principal axes (a lower bound of the
        # true one, less the rounding of y and of this float32 sum) exceeds mind
        if m == np.inf:
            thr = np.float32(np.inf)
            lo, hi = 0, cnt
        else:
            thr = np.float32(((m * (1.0 + 1e-9) + eps[r] + eps_max) * fac) ** 2)
            mm = m * (1.0 + 1e-9) + slack
            lo = np.searchsorted(dms, h[r] - mm)
            hi = np.searchsorted(dms, h[r] + mm, side="right")
        if hi <= lo:
            continue
        counts[1] += hi - lo
        for jj in range(lo, hi):
            acc[jj] = 0.0
        # the first p1 axes for every centre in range (vectorised); the other axes only for
        # the pairs still under the threshold (a partial sum of squares can only grow)
        for t in range(p1):
            yv = Y[r, t]
            for jj in range(lo, hi):
                w = yv - YcT[t, jj]
                acc[jj] += w * w
        for jj in range(lo, hi):
            if acc[jj] <= thr:
                q = sel[jj]
                a = acc[jj]
                cq = cpos[q]
                for t in range(p1, p):
                    w = Y[r, t] - Y[cq, t]
                    a += w * w
                if a > thr:
                    continue
                # second test: the full float32 distance, with its rounding bound
                if np.float64(_sq32(x, r, cpos[q])) > (m * (1.0 + 1e-9)) ** 2 * facx:
                    continue
                dd = pair_dist(x, r, cpos[q], plan, scratch)
                counts[0] += 1
                if dd < m:
                    m = dd
                    thr = np.float32(((m * (1.0 + 1e-9) + eps[r] + eps_max) * fac) ** 2)
        mind[r] = m


@njit(cache=True, nogil=True, parallel=True)
def _update_rows_par(x, Y, eps, eps_max, plan, s, e, cpos, sel, YcT, dms, cnt, slack, mind, h, scratch2, acc2,
                     counts2):
    """:func:`_update_rows` on ``T`` threads, each on its own slice of rows and buffers."""
    T = acc2.shape[0]
    step = (e - s + T - 1) // T
    for c in prange(T):
        r0 = s + c * step
        r1 = min(e, r0 + step)
        if r1 > r0:
            _update_rows(x, Y, eps, eps_max, plan, r0, r1, cpos, sel, YcT, dms, cnt, slack, mind, h, scratch2[c],
                         acc2[c], counts2[c])


@njit(cache=True, nogil=True)
def _sync(x, Y, eps, eps_max, plan, s, e, C, cpos, j0, j1, mind, orig, bc, brad, h, bound, scratch, sel, YcT, acc,
          dmv, tmp, counts, par_min, scratch2, acc2, counts2):
    """Compare rows ``s:e`` with centres ``j0:j1``; return the block's new maximum and its
    row (original index).

    Tests, cheapest first, each a proven bound (the slack terms are far above the rounding
    of the float64 sums they guard): a centre farther from the block's ball than ``bound``
    (an upper bound of every row's distance to the chosen set) cannot move any row; a row
    ``x`` at distance ``h`` from the block centre only needs the centres whose distance
    ``dm`` to that centre is within ``|dm - h| <= mind(x)`` (triangle inequality: with the
    centres sorted by ``dm`` that is one contiguous range); then the principal-axis test,
    the float32 test, and the exact distance."""
    cnt = 0
    for q in range(j0, j1):
        dq = math.sqrt(_sq64(bc, C, q))
        if dq * (1.0 - 1e-9) - brad > bound:
            continue
        tmp[cnt] = q
        dmv[cnt] = dq
        cnt += 1
    counts[2] += j1 - j0 - cnt
    if cnt > 0:
        order = np.argsort(dmv[:cnt])
        dms = dmv[:cnt][order]
        for jj in range(cnt):
            q = tmp[order[jj]]
            sel[jj] = q
            for t in range(Y.shape[1]):
                YcT[t, jj] = Y[cpos[q], t]
        slack = 1e-12 * (dms[cnt - 1] + brad)
        if (e - s) * cnt >= par_min and acc2.shape[0] > 1:
            _update_rows_par(x, Y, eps, eps_max, plan, s, e, cpos, sel, YcT, dms, cnt, slack, mind, h, scratch2,
                             acc2, counts2)
            for c in range(counts2.shape[0]):
                counts[0] += counts2[c, 0]
                counts[1] += counts2[c, 1]
                counts2[c, 0] = 0
                counts2[c, 1] = 0
        else:
            _update_rows(x, Y, eps, eps_max, plan, s, e, cpos, sel, YcT, dms, cnt, slack, mind, h, scratch, acc,
                         counts)
    best = -1.0
    arg = orig[s]
    for r in range(s, e):
        if mind[r] > best or (mind[r] == best and orig[r] < arg):
            best = mind[r]
            arg = orig[r]
    return best, arg


@njit(cache=True, nogil=True)
def _run(x, Y, eps, eps_max, plan, B, C, cpos, chosen, k, n, every, mind, orig, where, bc, brad, h, synced, tv, ta,
         tb, P, scratch, sel, YcT, acc, dmv, tmp, counts, par_min, scratch2, acc2, counts2):
    N = x.shape[0]
    while True:
        if k >= n:
            return k, 1
        b = tb[1]
        if synced[b] < k:
            s = b * B
            e = min(N, s + B)
            v, a = _sync(x, Y, eps, eps_max, plan, s, e, C, cpos, synced[b], k, mind, orig, bc[b], brad[b], h,
                         tv[P + b], scratch, sel, YcT, acc, dmv, tmp, counts, par_min, scratch2, acc2, counts2)
            synced[b] = k
            counts[3] += 1
            _set_leaf(tv, ta, tb, P, b, v, a)
            continue
        if tv[1] <= 0.0:
            return k, 1  # every remaining row duplicates a chosen one
        r = where[ta[1]]
        chosen[k] = ta[1]
        cpos[k] = r
        C[k] = x[r]
        k += 1
        if k % every == 0:
            return k, 0


@njit(cache=True, nogil=True)
def _block_balls(x, B, plan, bc, brad, h):
    """Centre (float32 mean) and radius (float64, exact distances) of every block, and
    every row's distance ``h`` to its block's centre."""
    N, d = x.shape
    acc = np.empty(d, np.float64)
    c64 = np.empty(d, np.float64)
    for b in range(bc.shape[0]):
        s = b * B
        e = min(N, s + B)
        acc[:] = 0.0
        for r in range(s, e):
            for i in range(d):
                acc[i] += x[r, i]
        for i in range(d):
            bc[b, i] = np.float32(acc[i] / (e - s))
            c64[i] = np.float64(bc[b, i])
        rad = 0.0
        for r in range(s, e):
            t = _dist_to(x, r, c64, plan)
            h[r] = t
            if t > rad:
                rad = t
        brad[b] = rad * (1.0 + 1e-9)


class LazyState:
    """Everything the traversal keeps between calls of :meth:`run` (for progress). ``x``:
    the rows already in block order (``orig[i]`` is the original index of row ``i``);
    ``Y``/``eps``: their :func:`._blocks.principal_rows`, in the same order."""

    def __init__(self, x: np.ndarray, orig: np.ndarray, n: int, start: int, block: int, Y: np.ndarray,
                 eps: np.ndarray, threads: int = 1, par_min: int = 16384):
        from defectforge.bank._exact import pairwise_plan

        N, d = x.shape
        self.x, self.n, self.B = x, int(n), int(block)
        self.orig = np.ascontiguousarray(orig, dtype=np.int64)
        self.where = np.empty(N, np.int64)
        self.where[self.orig] = np.arange(N)
        self.plan = pairwise_plan(d)
        self.Y, self.eps = np.ascontiguousarray(Y, dtype=np.float32), np.ascontiguousarray(eps, dtype=np.float64)
        self.eps_max = float(self.eps.max()) if N else 0.0
        nb = (N + self.B - 1) // self.B
        self.bc = np.empty((nb, d), np.float32)
        self.brad = np.empty(nb, np.float64)
        self.h = np.empty(N, np.float64)
        _block_balls(x, self.B, self.plan, self.bc, self.brad, self.h)
        self.P = 1 << max(0, math.ceil(math.log2(max(nb, 1))))
        self.tv = np.full(2 * self.P, -1.0)
        self.ta = np.full(2 * self.P, np.iinfo(np.int64).max, np.int64)
        self.tb = np.zeros(2 * self.P, np.int64)
        self.mind = np.full(N, np.inf)
        self.synced = np.zeros(nb, np.int64)
        for b in range(nb):  # blocks not yet seen: bound +inf
            _set_leaf(self.tv, self.ta, self.tb, self.P, b, np.inf, int(self.orig[b * self.B]))
        self.C = np.empty((self.n, d), np.float32)
        self.YcT = np.empty((self.Y.shape[1], self.n), np.float32)
        self.dmv = np.empty(self.n, np.float64)
        self.tmp = np.empty(self.n, np.int64)
        self.sel = np.empty(self.n, np.int64)
        self.chosen = np.empty(self.n, np.int64)
        self.cpos = np.empty(self.n, np.int64)
        r = int(self.where[start])
        self.chosen[0], self.cpos[0], self.C[0] = start, r, x[r]
        T = max(1, int(threads))
        self.par_min = int(par_min)  # row-centre pairs a visit needs before it is split over threads
        self.scratch2 = np.empty((T, d), np.float64)
        self.acc2 = np.empty((T, self.n), np.float32)
        self.scratch, self.acc = self.scratch2[0], self.acc2[0]  # the one-thread path uses thread 0's buffers
        self.counts2 = np.zeros((T, 2), np.int64)
        self.counts = np.zeros(4, np.int64)  # exact distances, row-centre pairs tested, centres skipped, syncs
        self.k = 1

    def run(self, every: int) -> bool:
        """Choose rows until ``every`` divides the count, ``n`` are chosen or all rows are
        covered; True when finished."""
        k, done = _run(self.x, self.Y, self.eps, self.eps_max, self.plan, self.B, self.C, self.cpos, self.chosen,
                       self.k, self.n, int(every), self.mind, self.orig, self.where, self.bc, self.brad, self.h,
                       self.synced, self.tv, self.ta, self.tb, self.P, self.scratch, self.sel, self.YcT, self.acc,
                       self.dmv, self.tmp, self.counts, self.par_min, self.scratch2, self.acc2, self.counts2)
        self.k = int(k)
        return bool(done)
