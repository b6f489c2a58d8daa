"""Ball tree and pruned centre updates for :func:`defectforge.bank.coreset.greedy_kcenter`
(compiled with numba; cached on disk after the first use).

Tree: a complete binary tree in heap order (children of node ``i`` are ``2i+1`` and
``2i+2``) over a permutation ``perm`` of the rows; each node holds the rows
``perm[start:end]``, split at the median of their projection on the line through two far
rows. Every node has a centre (the float32 mean of its rows) and a radius (the float64
maximum distance of its rows to that centre), so every row ``x`` of the node satisfies
``||x - m|| <= rho``.

State: ``mind[j]`` is the distance of the row ``perm[j]`` to the nearest chosen row;
``nmax[v]`` / ``narg[v]`` the largest ``mind`` under node ``v`` and the lowest row index
attaining it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

#: relative margin a skip must win by (the bound's own rounding is ~1e-14 relative)
SLACK = 1e-9


class Tree(NamedTuple):
    perm: np.ndarray      # (N,) int64 row index at each tree position
    start: np.ndarray     # (n_nodes,) int64
    end: np.ndarray       # (n_nodes,) int64
    centre: np.ndarray    # (n_nodes, d) float32
    radius: np.ndarray    # (n_nodes,) float64
    first_leaf: int
    plan: np.ndarray      # pairwise-summation program for the row width
    margin: float


class State(NamedTuple):
    mind: np.ndarray      # (N,) float64, by tree position
    nmax: np.ndarray      # (n_nodes,) float64
    narg: np.ndarray      # (n_nodes,) int64
    stack: np.ndarray     # scratch
    visited: np.ndarray   # scratch


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
def _plain_dist(a, c):
    s = 0.0
    for i in range(a.shape[0]):
        t = np.float64(a[i]) - c[i]
        s += t * t
    return math.sqrt(s)


@njit(cache=True, nogil=True)
def _build(x, leaf_size, plan):
    N, d = x.shape  # x: the rows the tree is built on (geometry space)
    depth = 0
    while (N >> depth) > leaf_size:
        depth += 1
    n_leaves = 1 << depth
    n_nodes = 2 * n_leaves - 1
    first_leaf = n_leaves - 1
    perm = np.arange(N)
    start = np.zeros(n_nodes, np.int64)
    end = np.zeros(n_nodes, np.int64)
    centre = np.zeros((n_nodes, d), np.float32)
    radius = np.zeros(n_nodes, np.float64)
    end[0] = N
    c = np.empty(d, np.float64)
    u = np.empty(d, np.float64)
    for v in range(n_nodes):
        s, e = start[v], end[v]
        # centre and radius
        c[:] = 0.0
        for j in range(s, e):
            for i in range(d):
                c[i] += x[perm[j], i]
        if e > s:
            for i in range(d):
                centre[v, i] = np.float32(c[i] / (e - s))
            for i in range(d):
                c[i] = np.float64(centre[v, i])
            rad = 0.0
            for j in range(s, e):
                dj = _dist_to(x, perm[j], c, plan)
                if dj > rad:
                    rad = dj
            radius[v] = rad
        if v >= first_leaf:
            continue
        mid = s + (e - s) // 2
        start[2 * v + 1], end[2 * v + 1] = s, mid
        start[2 * v + 2], end[2 * v + 2] = mid, e
        if e - s < 2:
            continue
        # split direction: a (farthest from the centre) -> b (farthest from a)
        a = perm[s]
        best = -1.0
        for j in range(s, e):
            dj = _dist_to(x, perm[j], c, plan)
            if dj > best:
                best, a = dj, perm[j]
        for i in range(d):
            c[i] = np.float64(x[a, i])
        b = a
        best = -1.0
        for j in range(s, e):
            dj = _dist_to(x, perm[j], c, plan)
            if dj > best:
                best, b = dj, perm[j]
        for i in range(d):
            u[i] = np.float64(x[b, i]) - np.float64(x[a, i])
        proj = np.empty(e - s, np.float64)
        for j in range(s, e):
            t = 0.0
            for i in range(d):
                t += x[perm[j], i] * u[i]
            proj[j - s] = t
        order = np.argsort(proj, kind="mergesort")
        part = perm[s:e].copy()
        for j in range(e - s):
            perm[s + j] = part[order[j]]
    return perm, start, end, centre, radius, first_leaf


def build(y: np.ndarray, leaf_size: int, width: int, margin: float) -> Tree:
    """The ball tree of the rows of ``y`` (leaves of at most ``leaf_size`` rows); ``width``
    is the width of the rows distances are computed on, ``margin`` an absolute slack every
    skip must also win by (the rounding of ``y`` itself)."""
    plan_y = pairwise_plan(y.shape[1])
    return Tree(*_build(y, int(max(2, leaf_size)), plan_y), pairwise_plan(width), float(margin))


def new_state(tree: Tree, n_rows: int) -> State:
    n_nodes = len(tree.start)
    return State(np.full(n_rows, np.inf), np.full(n_nodes, np.inf), np.zeros(n_nodes, np.int64),
                 np.zeros(2 * 64 + 8, np.int64), np.zeros(n_nodes, np.int64))


@njit(cache=True, nogil=True)
def _update(x, y, perm, start, end, centre, radius, first_leaf, plan, margin, mind, nmax, narg, stack, visited,
            row, counts):
    """Lower ``mind`` by the distances to row ``row`` where that can change anything."""
    d = x.shape[1]
    c = np.empty(d, np.float64)
    for i in range(d):
        c[i] = np.float64(x[row, i])
    cy = np.empty(y.shape[1], np.float64)
    for i in range(y.shape[1]):
        cy[i] = np.float64(y[row, i])
    top = 1
    stack[0] = 0
    nv = 0
    while top > 0:
        top -= 1
        v = stack[top]
        s, e = start[v], end[v]
        if e <= s:
            nmax[v] = -1.0
            continue
        counts[1] += 1
        dm = _plain_dist(centre[v], cy)
        rho = radius[v]
        if dm - rho - SLACK * (dm + rho) - margin >= nmax[v]:
            continue  # no row of this node can get closer to the new centre
        if v >= first_leaf:
            bv = -1.0
            bi = -1
            for j in range(s, e):
                r = perm[j]
                if mind[j] > 0.0:
                    # the row's own projected distance bounds its true one from below
                    ly = _plain_dist(y[r], cy)
                    if ly - SLACK * ly - margin < mind[j]:
                        dj = math.sqrt(_pairwise_sq(x, r, c, plan))
                        counts[0] += 1
                        if dj < mind[j]:
                            mind[j] = dj
                val = mind[j]
                if val > bv or (val == bv and r < bi):
                    bv, bi = val, r
            nmax[v] = bv
            narg[v] = bi
        else:
            visited[nv] = v
            nv += 1
            stack[top] = 2 * v + 2
            stack[top + 1] = 2 * v + 1
            top += 2
    for q in range(nv - 1, -1, -1):
        v = visited[q]
        a, b = 2 * v + 1, 2 * v + 2
        if nmax[b] > nmax[a] or (nmax[b] == nmax[a] and narg[b] < narg[a]):
            nmax[v], narg[v] = nmax[b], narg[b]
        else:
            nmax[v], narg[v] = nmax[a], narg[a]


@njit(cache=True, nogil=True)
def _run(x, y, perm, start, end, centre, radius, first_leaf, plan, margin, mind, nmax, narg, stack, visited,
         chosen, k, n, every, counts):
    while True:
        if k >= n:
            return k, 1
        _update(x, y, perm, start, end, centre, radius, first_leaf, plan, margin, mind, nmax, narg, stack, visited,
                chosen[k - 1], counts)
        if nmax[0] <= 0.0:
            return k, 1  # every remaining row duplicates a chosen one
        chosen[k] = narg[0]
        k += 1
        if k % every == 0:
            return k, 0


def add_centres(x: np.ndarray, y: np.ndarray, tree: Tree, state: State, chosen: np.ndarray, k: int, n: int, every: int,
                counts: np.ndarray) -> tuple[int, int]:
    """Add ``chosen[k-1]`` as a centre, then keep choosing the farthest row until ``n``
    rows are chosen, all rows are covered, or ``k`` reaches a multiple of ``every``.
    Returns ``(rows chosen, finished)``."""
    k, done = _run(x, y, tree.perm, tree.start, tree.end, tree.centre, tree.radius, tree.first_leaf, tree.plan,
                   tree.margin,
                   state.mind, state.nmax, state.narg, state.stack, state.visited, chosen, int(k), int(n),
                   int(every), counts)
    return int(k), int(done)
