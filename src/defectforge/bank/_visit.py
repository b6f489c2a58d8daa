"""One visit's row work for :mod:`._lazy` (compiled with numba; cached on disk): lower bounds
of the rows' distances to the visit's centres on the principal axes (float32, proven), the
scan of the pairs those bounds leave, and the second thread that shares a visit's rows."""

from __future__ import annotations

import numpy as np
from numba import njit

import defectforge.bank._numba  # noqa: F401  (threading layer without OpenMP)
from defectforge.bank._exact import pair_dist
from defectforge.bank._spin import fetch_add, load_acquire, store_release, yield_cpu


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
    """``sum((Y[q, :p] - yc)^2)`` (``p = len(yc)``) in float64, any order (vectorised): within
    ``p 2^-52`` relative."""
    t = 0.0
    for i in range(yc.shape[0]):
        w = np.float64(Y[q, i]) - yc[i]
        t += w * w
    return t


# Slack of the float32 bound (see :func:`_row_bounds`): squared norms are stored rounded down by
# this factor and norms rounded up by it, which covers the float32 evaluation's own rounding.
SLACK32 = 2.0 ** -19
_PAD = 1e30  # squared norm of the padding columns: their bound never passes a test


@njit(cache=True, nogil=True, fastmath=True)
def _row_bounds16(Y, r, YcT, ng, nc, ncn, a2, c2, lb, gmin):
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
    for j in range(ng * 16):
        g = (a0 * YcT[0, j] + a1 * YcT[1, j] + a2_ * YcT[2, j] + a3 * YcT[3, j] + a4 * YcT[4, j] + a5 * YcT[5, j]
             + a6 * YcT[6, j] + a7 * YcT[7, j] + a8 * YcT[8, j] + a9 * YcT[9, j] + a10 * YcT[10, j]
             + a11 * YcT[11, j] + a12 * YcT[12, j] + a13 * YcT[13, j] + a14 * YcT[14, j] + a15 * YcT[15, j])
        lb[j] = a2 + nc[j] - np.float32(2.0) * g - c2 * ncn[j]
    _group_mins(lb, ng, gmin)


@njit(cache=True, nogil=True, fastmath=True)
def _row_bounds(Y, r, YcT, ng, nc, ncn, a2, c2, lb, gmin):
    """``lb[j] <= |Y[r] - Yc_j|^2`` for the ``16 ng`` columns of ``YcT`` (the visit's centres
    on the principal axes, transposed, padded to a multiple of 16), and ``gmin[g]``, the
    least bound of the group ``{g, g + ng, ..., g + 15 ng}``. All in float32: ``nc`` are the
    centres' squared norms rounded down by ``SLACK32`` (and to float32), ``ncn`` their norms
    rounded up by it, ``a2`` the row's squared norm rounded down, ``c2 >= 2 gamma |a|``.

    Why it is a lower bound: the float32 dot product of ``p`` terms, in any order, is within
    ``gamma |a| |c|`` of the exact one, which ``c2 * ncn`` covers; the sum of the four terms,
    in any order, has at most three roundings of partial sums no larger than
    ``2 (|a|^2 + |c|^2)``, so it lies within ``6.1 u (|a|^2 + |c|^2)`` (``u = 2^-24``) of its
    exact value, and the norms given away by ``SLACK32`` (at least ``30 u (|a|^2 + |c|^2)``)
    cover it."""
    n = ng * 16
    for j in range(n):
        lb[j] = 0.0
    for t in range(Y.shape[1]):
        a = Y[r, t]
        for j in range(n):
            lb[j] += a * YcT[t, j]
    for j in range(n):
        lb[j] = a2 + nc[j] - np.float32(2.0) * lb[j] - c2 * ncn[j]
    _group_mins(lb, ng, gmin)


@njit(cache=True, nogil=True, fastmath=True)
def _group_mins(lb, ng, gmin):
    """The least bound of every group ``{g, g + ng, ..., g + 15 ng}`` (strided groups: the
    minimum runs down columns, vectorised), so that the scan skips whole groups."""
    for g in range(ng):
        gmin[g] = lb[g]
    for k in range(1, 16):
        o = k * ng
        for g in range(ng):
            gmin[g] = min(gmin[g], lb[o + g])


@njit(cache=True, nogil=True)
def _scan_row(x, r, m, slack, facx, lb, gmin, ng, cnt, sel, C, plan, scratch, counts):
    """Row ``r``'s distance to the chosen set (``m`` so far) after the visit's centres whose
    bound ``lb`` does not rule them out (groups first, by their least bound), then their
    float32 distance with its rounding bound, then the exact distance."""
    thr = np.inf
    if m != np.inf:
        t0 = m * (1.0 + 1e-9) + slack
        thr = t0 * t0
    for g in range(ng):
        if gmin[g] > thr:
            continue
        for jj in range(g, cnt, ng):
            if lb[jj] > thr:
                continue
            q = sel[jj]
            if m != np.inf and np.float64(_sq32(x, r, C, q)) > (m * (1.0 + 1e-9)) ** 2 * facx:
                continue
            dd = pair_dist(x, r, C, q, plan, scratch)  # C[q]: a copy of the centre's row
            counts[0] += 1
            if dd < m:
                m = dd
                t0 = m * (1.0 + 1e-9) + slack
                thr = t0 * t0
    return m


PAR_ROWS = 16  # rows taken at a time by each thread of a shared visit
SPINS = 200  # a wait loop's turns before it yields the CPU at every turn (busy machines)


@njit(cache=True, nogil=True)
def _rows(x, Y, sqn, nrm, gam, eps, eps_max, plan, s, e, C, mind, sel, YcT, nc, ncn, cnt, ng, lb, gmin, scratch,
          counts):
    """Rows ``s:e`` against the visit's ``cnt`` centres (``sel``/``YcT``/``nc``/``ncn``)."""
    facx = 1.0 + (x.shape[1] + 8) * 2.0 ** -23  # a float32 sum of d squares: within (d + 4) 2^-24
    p = Y.shape[1]
    for r in range(s, e):
        c2 = np.float32(2.0 * gam * nrm[r] * (1.0 + SLACK32))  # >= 2 gamma |a| after rounding
        if p == 16:
            _row_bounds16(Y, r, YcT, ng, nc, ncn, sqn[r], c2, lb, gmin)
        else:
            _row_bounds(Y, r, YcT, ng, nc, ncn, sqn[r], c2, lb, gmin)
        mind[r] = _scan_row(x, r, mind[r], eps[r] + eps_max, facx, lb, gmin, ng, cnt, sel, C, plan, scratch, counts)


@njit(cache=True, nogil=True)
def _take_rows(pj, x, Y, sqn, nrm, gam, eps, eps_max, plan, C, mind, sel, YcT, nc, ncn, lb, gmin, scratch, counts):
    """A shared visit's rows, ``PAR_ROWS`` at a time from the counter ``pj[7]`` (below ``pj[2]``),
    against its ``pj[3]`` centres (``pj[4]`` groups), until none are left; run by both threads."""
    e = pj[2]
    while True:
        a = fetch_add(pj, 7, PAR_ROWS)
        if a >= e:
            return
        _rows(x, Y, sqn, nrm, gam, eps, eps_max, plan, a, min(e, a + PAR_ROWS), C, mind, sel, YcT, nc, ncn, pj[3],
              pj[4], lb, gmin, scratch, counts)


@njit(cache=True, nogil=True)
def _worker(pj, x, Y, sqn, nrm, gam, eps, eps_max, plan, C, mind, sel, YcT, nc, ncn, lb, gmin, scratch, counts):
    """The second thread of :meth:`LazyState.run`: waits for a job (``pj[0]``, a sequence
    number; -1 stops it), then takes ``PAR_ROWS`` rows at a time (``pj[7]``, shared with the
    main thread) below ``pj[2]`` and runs :func:`_rows` on them against the visit's ``pj[3]``
    centres (``pj[4]`` groups) in the main thread's visit buffers, with its own bounds and
    counters; then publishes the sequence number in ``pj[5]``."""
    seen = 0
    spins = 0
    while True:
        q = load_acquire(pj, 0)
        if q < 0:
            return
        if q == seen:
            spins += 1
            if spins > SPINS:
                yield_cpu()
            continue
        seen = q
        spins = 0
        _take_rows(pj, x, Y, sqn, nrm, gam, eps, eps_max, plan, C, mind, sel, YcT, nc, ncn, lb, gmin, scratch, counts)
        store_release(pj, 5, q)


@njit(cache=True, nogil=True)
def _visit_rows(pj, x, Y, sqn, nrm, gam, eps, eps_max, plan, s, e, C, mind, sel, YcT, nc, ncn, cnt, ng, lb, gmin,
                scratch, counts):
    """:func:`_rows` for a visit's rows ``s:e``; shared with the worker, ``PAR_ROWS`` rows at a
    time, when one listens (``pj[6]``: the fewest row-centre pairs worth sharing, 0 for none)
    and the visit is that large (``pj[1] > 0``, for tests: the worker takes the first rows).
    Returns when every row is done."""
    if pj[6] > 0 and (e - s) * cnt >= pj[6]:  # shared with the worker, PAR_ROWS rows at a time
        seq = pj[0] + 1
        pj[2], pj[3], pj[4] = e, cnt, ng
        pj[7] = s  # the next rows to take
        store_release(pj, 0, seq)
        spins = 0
        while pj[1] > 0 and load_acquire(pj, 7) == s:  # tests: the worker takes the first rows
            spins += 1
            if spins > SPINS:
                yield_cpu()
        _take_rows(pj, x, Y, sqn, nrm, gam, eps, eps_max, plan, C, mind, sel, YcT, nc, ncn, lb, gmin, scratch, counts)
        spins = 0
        while load_acquire(pj, 5) != seq:
            spins += 1
            if spins > SPINS:
                yield_cpu()
    else:
        _rows(x, Y, sqn, nrm, gam, eps, eps_max, plan, s, e, C, mind, sel, YcT, nc, ncn, cnt, ng, lb, gmin,
              scratch, counts)
