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
rounding bound; vectorised, :func:`_row_bounds`), then the float32 distance with its rounding
bound. Only the pairs no test rules out (the row may be at least as close to the new centre
as to its nearest chosen one) get the exact float64 distance, computed in NumPy's pairwise
order (:func:`._exact.pair_dist`), so every stored distance is bit for bit the brute force's.
Blocks far from the action are visited rarely and then with many centres at once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

import defectforge.bank._numba  # noqa: F401  (threading layer without OpenMP)
from defectforge.bank._exact import pair_dist


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
def _sq32(x, r, c, q):
    """``sum((x[r] - c[q])^2)`` in float32, any order (vectorised): within ``(d + 4) 2^-24``
    relative of the exact value whatever the order."""
    acc = np.float32(0.0)
    for i in range(x.shape[1]):
        w = x[r, i] - c[q, i]
        acc += w * w
    return acc


@njit(cache=True, nogil=True, fastmath=True)
def _ysq(Y, q, yc):
    """``sum((Y[q] - yc)^2)`` in float64, any order (vectorised): within ``p 2^-52`` relative."""
    t = 0.0
    for i in range(Y.shape[1]):
        w = np.float64(Y[q, i]) - yc[i]
        t += w * w
    return t


@njit(cache=True, nogil=True, fastmath=True)
def _row_bounds16(Y, r, YcT, cnt, nc, ncn, a2, c2, lb):
    """:func:`_row_bounds` for 16 axes, written out so that the compiler keeps the row in
    registers and vectorises over the centres."""
    a0 = Y[r, 0]
    a1 = Y[r, 1]
    a2_ = Y[r, 2]
    a3 = Y[r, 3]
    a4 = Y[r, 4]
    a5 = Y[r, 5]
    a6 = Y[r, 6]
    a7 = Y[r, 7]
    a8 = Y[r, 8]
    a9 = Y[r, 9]
    a10 = Y[r, 10]
    a11 = Y[r, 11]
    a12 = Y[r, 12]
    a13 = Y[r, 13]
    a14 = Y[r, 14]
    a15 = Y[r, 15]
    for j in range(cnt):
        g = (a0 * YcT[0, j] + a1 * YcT[1, j] + a2_ * YcT[2, j] + a3 * YcT[3, j] + a4 * YcT[4, j] + a5 * YcT[5, j]
             + a6 * YcT[6, j] + a7 * YcT[7, j] + a8 * YcT[8, j] + a9 * YcT[9, j] + a10 * YcT[10, j]
             + a11 * YcT[11, j] + a12 * YcT[12, j] + a13 * YcT[13, j] + a14 * YcT[14, j] + a15 * YcT[15, j])
        lb[j] = (a2 + nc[j]) * (1.0 - 1e-12) - 2.0 * np.float64(g) - c2 * ncn[j]


@njit(cache=True, nogil=True, fastmath=True)
def _row_bounds(Y, r, YcT, cnt, nc, ncn, a2, c2, lb):
    """``lb[j] <= |Y[r] - Yc_j|^2`` for the ``cnt`` centres (``YcT``: their rows on the
    principal axes, transposed; ``nc``/``ncn`` their squared norms in float64 and their
    norms rounded up; ``a2`` the row's squared norm). The float32 dot product, in any order,
    is within ``gamma |a| |c|`` of the exact one (``c2 = 2 gamma |a|``); ``1e-12`` covers
    the float64 norms' rounding."""
    for j in range(cnt):
        lb[j] = 0.0
    for t in range(Y.shape[1]):
        a = Y[r, t]
        for j in range(cnt):
            lb[j] += a * YcT[t, j]
    for j in range(cnt):
        lb[j] = (a2 + nc[j]) * (1.0 - 1e-12) - 2.0 * lb[j] - c2 * ncn[j]


@njit(cache=True, nogil=True, fastmath=True)
def _group_mins(lb, cnt, out):
    """The minimum of every 16 consecutive bounds (vectorised), so that the scan skips groups."""
    ng = (cnt + 15) // 16
    for g in range(ng):
        v = lb[g * 16:min(cnt, g * 16 + 16)]
        mn = v[0]
        for i in range(1, v.shape[0]):
            mn = min(mn, v[i])
        out[g] = mn
    return ng


@njit(cache=True, nogil=True)
def _sync(x, Y, nr, ny, gam, eps, eps_max, plan, s, e, C, cpos, j0, j1, mind, orig, ybc, ybr, bound, scratch, sel,
          YcT, nc, ncn, lb, gmin, counts):
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
        cq = cpos[q]
        t = _ysq(Y, cq, ybc)
        r_ = lim + eps[cq]
        if t * (1.0 - 1e-9) > r_ * r_:
            continue
        sel[cnt] = q
        for i in range(p):
            YcT[i, cnt] = Y[cq, i]
        nc[cnt] = nr[cq]
        ncn[cnt] = ny[cq]
        cnt += 1
    counts[2] += j1 - j0 - cnt
    if cnt > 0:
        # a float32 sum of d squared differences is within (d + 4) 2^-24 of the exact one
        facx = 1.0 + (x.shape[1] + 8) * 2.0 ** -23
        counts[1] += (e - s) * cnt
        for r in range(s, e):
            m = mind[r]
            if p == 16:
                _row_bounds16(Y, r, YcT, cnt, nc, ncn, nr[r], 2.0 * gam * ny[r], lb)
            else:
                _row_bounds(Y, r, YcT, cnt, nc, ncn, nr[r], 2.0 * gam * ny[r], lb)
            thr = np.inf
            if m != np.inf:
                t0 = m * (1.0 + 1e-9) + eps[r] + eps_max
                thr = t0 * t0
            for g in range(_group_mins(lb, cnt, gmin)):
                if gmin[g] > thr:
                    continue
                for jj in range(g * 16, min(cnt, g * 16 + 16)):
                    if lb[jj] > thr:
                        continue
                    q = sel[jj]
                    # the full float32 distance, with its rounding bound
                    if m != np.inf and np.float64(_sq32(x, r, C, q)) > (m * (1.0 + 1e-9)) ** 2 * facx:
                        continue
                    dd = pair_dist(x, r, C, q, plan, scratch)  # C[q]: a copy of the centre's row
                    counts[0] += 1
                    if dd < m:
                        m = dd
                        t0 = m * (1.0 + 1e-9) + eps[r] + eps_max
                        thr = t0 * t0
            mind[r] = m
    best = -1.0
    arg = orig[s]
    for r in range(s, e):
        if mind[r] > best or (mind[r] == best and orig[r] < arg):
            best = mind[r]
            arg = orig[r]
    return best, arg


@njit(cache=True, nogil=True)
def _sync_blocks(x, Y, nr, ny, gam, eps, eps_max, plan, B, C, cpos, k, mind, orig, ybc, ybr, synced, tv, ta, tb, P,
                 scratch, sel, YcT, nc, ncn, lb, gmin, counts, b0, b1):
    """Bring blocks ``b0:b1`` up to date with the first ``k`` centres and put their new
    maxima in the tree."""
    N = x.shape[0]
    for b in range(b0, b1):
        if synced[b] >= k:
            continue
        s = b * B
        e = min(N, s + B)
        v, a = _sync(x, Y, nr, ny, gam, eps, eps_max, plan, s, e, C, cpos, synced[b], k, mind, orig, ybc[b], ybr[b],
                     tv[P + b], scratch, sel, YcT, nc, ncn, lb, gmin, counts)
        synced[b] = k
        counts[3] += 1
        _set_leaf(tv, ta, tb, P, b, v, a)


@njit(cache=True, nogil=True)
def _run(x, Y, nr, ny, gam, eps, eps_max, plan, B, C, cpos, chosen, k, n, every, mind, orig, where, ybc, ybr, synced,
         tv, ta, tb, P, scratch, sel, YcT, nc, ncn, lb, gmin, counts, max_visits):
    visits = 0
    while True:
        if k >= n:
            return k, 1
        b = tb[1]
        if synced[b] < k:
            if visits >= max_visits:
                return k, 0  # resumable: the next call goes on from this block
            _sync_blocks(x, Y, nr, ny, gam, eps, eps_max, plan, B, C, cpos, k, mind, orig, ybc, ybr, synced, tv, ta,
                         tb, P, scratch, sel, YcT, nc, ncn, lb, gmin, counts, b, b + 1)
            visits += 1
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
    ``Y``/``eps``: their :func:`._blocks.principal_rows`, in the same order."""

    def __init__(self, x: np.ndarray, orig: np.ndarray, n: int, start: int, block: int, Y: np.ndarray,
                 eps: np.ndarray):
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
        self.nr = np.empty(N)  # squared norms on the principal axes (in chunks: no float64 copy of Y)
        for s in range(0, N, 65536):
            y64 = self.Y[s:s + 65536].astype(np.float64)
            self.nr[s:s + 65536] = np.einsum("ij,ij->i", y64, y64)
        self.ny = np.sqrt(self.nr) * (1.0 + 1e-12)  # norms, rounded up
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
        # one visit's centres: their principal rows (transposed), squared norms, norms, bounds
        self.sel = np.empty(self.n, np.int64)
        self.YcT = np.empty((p, _alias_free(self.n)), np.float32)
        self.nc = np.empty(self.n)
        self.ncn = np.empty(self.n)
        self.lb = np.empty(self.n)
        self.gmin = np.empty((self.n + 15) // 16)
        self.chosen = np.empty(self.n, np.int64)
        self.cpos = np.empty(self.n, np.int64)
        r = int(self.where[start])
        self.chosen[0], self.cpos[0], self.C[0] = start, r, x[r]
        self.scratch = np.empty(d, np.float64)
        self.counts = np.zeros(4, np.int64)  # exact distances, row-centre pairs bounded, centres skipped, visits
        self.k = 1

    def _args(self) -> tuple:
        return (self.x, self.Y, self.nr, self.ny, self.gam, self.eps, self.eps_max, self.plan, self.B, self.C)

    def prime(self, release, blocks: int = 1024) -> None:
        """Compare every block with the first centre, ``blocks`` blocks at a time with
        ``release()`` after each piece (what the first step of :meth:`run` would do in one
        go, touching every row; same result)."""
        nb = self.synced.shape[0]
        for b0 in range(0, nb, blocks):
            _sync_blocks(*self._args(), self.cpos, self.k, self.mind, self.orig, self.ybc, self.ybr, self.synced,
                         self.tv, self.ta, self.tb, self.P, self.scratch, self.sel, self.YcT, self.nc, self.ncn,
                         self.lb, self.gmin, self.counts, b0, min(nb, b0 + blocks))
            release()

    def run(self, every: int, max_visits: int = 1 << 62) -> bool:
        """Choose rows until ``every`` divides the count, ``n`` are chosen or all rows are
        covered, or until ``max_visits`` blocks were brought up to date (then mid-choice, to
        be resumed by the next call); True when finished."""
        k, done = _run(*self._args(), self.cpos, self.chosen, self.k, self.n, int(every), self.mind, self.orig,
                       self.where, self.ybc, self.ybr, self.synced, self.tv, self.ta, self.tb, self.P, self.scratch,
                       self.sel, self.YcT, self.nc, self.ncn, self.lb, self.gmin, self.counts, int(max_visits))
        self.k = int(k)
        return bool(done)
