"""Exact float64 distances between float32 rows, bit for bit NumPy's
``np.linalg.norm(x.astype(float64) - c, axis=1)`` (pairwise summation order), compiled
with numba. Shared by the coreset kernels."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


def pairwise_plan(n: int) -> np.ndarray:
    """NumPy's pairwise-summation tree for ``n`` terms as a postfix program: rows
    ``(lo, len)`` are blocks of at most 128 terms summed directly, ``(-1, 0)`` adds the two
    partial sums on top of the stack. (Numba's on-disk cache breaks recursive functions,
    so the recursion is unrolled here once per width.)"""
    prog: list[tuple[int, int]] = []

    def rec(lo: int, m: int) -> None:
        if m <= 128:
            prog.append((lo, m))
            return
        m2 = m // 2
        m2 -= m2 % 8
        rec(lo, m2)
        rec(lo + m2, m - m2)
        prog.append((-1, 0))

    rec(0, int(n))
    return np.asarray(prog, dtype=np.int64).reshape(-1, 2)


@njit(cache=True, nogil=True)
def _block_sq(x, r, c, lo, n):
    """``sum((x[r, lo:lo+n] - c[lo:lo+n])^2)`` in float64 for ``n <= 128``, in NumPy's order."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            t = np.float64(x[r, i]) - c[i]
            res += t * t
        return res
    r0 = np.float64(x[r, lo]) - c[lo]
    r1 = np.float64(x[r, lo + 1]) - c[lo + 1]
    r2 = np.float64(x[r, lo + 2]) - c[lo + 2]
    r3 = np.float64(x[r, lo + 3]) - c[lo + 3]
    r4 = np.float64(x[r, lo + 4]) - c[lo + 4]
    r5 = np.float64(x[r, lo + 5]) - c[lo + 5]
    r6 = np.float64(x[r, lo + 6]) - c[lo + 6]
    r7 = np.float64(x[r, lo + 7]) - c[lo + 7]
    r0 *= r0
    r1 *= r1
    r2 *= r2
    r3 *= r3
    r4 *= r4
    r5 *= r5
    r6 *= r6
    r7 *= r7
    i = 8
    stop = n - (n % 8)
    while i < stop:
        b = lo + i
        t0 = np.float64(x[r, b]) - c[b]
        t1 = np.float64(x[r, b + 1]) - c[b + 1]
        t2 = np.float64(x[r, b + 2]) - c[b + 2]
        t3 = np.float64(x[r, b + 3]) - c[b + 3]
        t4 = np.float64(x[r, b + 4]) - c[b + 4]
        t5 = np.float64(x[r, b + 5]) - c[b + 5]
        t6 = np.float64(x[r, b + 6]) - c[b + 6]
        t7 = np.float64(x[r, b + 7]) - c[b + 7]
        r0 += t0 * t0
        r1 += t1 * t1
        r2 += t2 * t2
        r3 += t3 * t3
        r4 += t4 * t4
        r5 += t5 * t5
        r6 += t6 * t6
        r7 += t7 * t7
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        t = np.float64(x[r, lo + i]) - c[lo + i]
        res += t * t
        i += 1
    return res


@njit(cache=True, nogil=True)
def _pairwise_sq(x, r, c, plan):
    """``sum((x[r] - c)^2)`` in float64, in NumPy's pairwise order (``plan`` from
    :func:`pairwise_plan`), i.e. bit for bit ``np.linalg.norm(x[r] - c) ** 2``'s sum."""
    if plan.shape[0] == 1:
        return _block_sq(x, r, c, 0, plan[0, 1])
    vals = np.empty(plan.shape[0], np.float64)
    top = 0
    for q in range(plan.shape[0]):
        if plan[q, 0] < 0:
            top -= 1
            vals[top - 1] = vals[top - 1] + vals[top]
        else:
            vals[top] = _block_sq(x, r, c, plan[q, 0], plan[q, 1])
            top += 1
    return vals[0]


@njit(cache=True, nogil=True)
def _dist_to(x, r, c, plan):
    return math.sqrt(_pairwise_sq(x, r, c, plan))


@njit(cache=True, nogil=True)
def pair_dist(x, r, c, q, plan, scratch):
    """Distance between row ``r`` of ``x`` and row ``q`` of ``c`` (``scratch``: a float64
    buffer of the row width)."""
    for i in range(x.shape[1]):
        scratch[i] = np.float64(c[q, i])
    return math.sqrt(_pairwise_sq(x, r, scratch, plan))
