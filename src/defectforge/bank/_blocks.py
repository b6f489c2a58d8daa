"""Preparing rows for the blocked traversal of :mod:`._lazy`: their first principal axes
with a rounding bound per row (:func:`principal_rows`), an order that puts near rows in the
same block (:func:`block_order`) and an in-place permutation (:func:`permute_rows`). All three
change only the speed of :func:`defectforge.bank.coreset.greedy_kcenter`, never its result."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def block_order(x, B):
    """A permutation of the rows that puts near rows in the same block of ``B``: split
    every group of more than ``B`` rows in two at a multiple of ``B``, along the line
    through two far rows (farthest from the mean, then farthest from that one)."""
    N, d = x.shape
    perm = np.arange(N)
    stack = np.empty((128, 2), np.int64)
    stack[0, 0], stack[0, 1] = 0, N
    top = 1
    mu = np.empty(d, np.float64)
    u = np.empty(d, np.float64)
    while top > 0:
        top -= 1
        s, e = stack[top, 0], stack[top, 1]
        if e - s <= B:
            continue
        mu[:] = 0.0
        for j in range(s, e):
            for i in range(d):
                mu[i] += x[perm[j], i]
        for i in range(d):
            mu[i] /= e - s
        a = perm[s]
        best = -1.0
        for j in range(s, e):
            t = 0.0
            for i in range(d):
                w = x[perm[j], i] - mu[i]
                t += w * w
            if t > best:
                best, a = t, perm[j]
        bb = a
        best = -1.0
        for j in range(s, e):
            t = 0.0
            for i in range(d):
                w = np.float64(x[perm[j], i]) - x[a, i]
                t += w * w
            if t > best:
                best, bb = t, perm[j]
        for i in range(d):
            u[i] = np.float64(x[bb, i]) - x[a, i]
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
        half = ((e - s + B - 1) // B + 1) // 2
        mid = s + half * B
        stack[top, 0], stack[top, 1] = s, mid
        stack[top + 1, 0], stack[top + 1, 1] = mid, e
        top += 2
    return perm


@njit(cache=True, nogil=True)
def permute_rows(x, perm):
    """In place: row ``i`` becomes the old row ``perm[i]`` (cycle by cycle, one row of scratch)."""
    N = perm.shape[0]
    done = np.zeros(N, np.bool_)
    tmp = np.empty(x.shape[1], x.dtype)
    for i in range(N):
        if done[i]:
            continue
        tmp[:] = x[i]
        j = i
        while True:
            k = perm[j]
            done[j] = True
            if k == i:
                x[j] = tmp
                break
            x[j] = x[k]
            j = k


def principal_rows(x: np.ndarray, dim: int, chunk: int = 65536, release=None) -> tuple[np.ndarray, np.ndarray]:
    """``(y, eps)``: the rows of ``x`` on their first ``dim`` principal axes (float32), and
    per row a bound on how far the rounding moved ``y``.

    The axes ``V`` are orthonormal, so ``||V^T (a - b)|| <= ||a - b||`` (up to ~1e-15
    relative, covered by the test's 1e-9 slack): a distance between two ``y`` rows, less
    ``eps_a + eps_b``, never exceeds the true one. The axes come from a fixed stride sample
    of at most 20,000 rows (no randomness). ``release`` (rows in a file mapping) is called
    after every chunk of rows read."""
    N, d = x.shape
    p = int(min(dim, d))
    if p <= 0 or N == 0:
        return np.zeros((N, 0), np.float32), np.zeros(N)
    stride = max(1, N // 20000)
    step = stride * max(1, chunk // stride)  # chunks of whole strides: together exactly x[::stride]
    parts = []
    for s in range(0, N, step):
        parts.append(x[s:s + step:stride].astype(np.float64))
        if release is not None:
            release()
    sample = np.concatenate(parts)
    mu = sample.mean(0)
    sample -= mu
    _, vecs = np.linalg.eigh(sample.T @ sample)
    v = np.ascontiguousarray(vecs[:, ::-1][:, :p])
    y = np.empty((N, p), np.float32)
    eps = np.empty(N, np.float64)
    for s in range(0, N, chunk):
        part = x[s:s + chunk].astype(np.float64) - mu
        # float32 rounding of each coordinate (2^-24 relative) plus the float64 product's error
        eps[s:s + chunk] = (2.0 ** -23 + 1e-12 * d) * np.sqrt(np.einsum("ij,ij->i", part, part)) + 1e-30
        y[s:s + chunk] = part @ v
        if release is not None:
            release()
    return y, eps
