"""Exact k-nearest-neighbour search screened by a bfloat16 matrix product (CPU).

A flat float32 search spends its time on the matrix product ``q . b`` for every query and
bank row (2,528 x 9,151 x 152 multiply-adds per BSData image against ExDD's bank). CPUs with
bfloat16 matrix units (Intel AMX, AVX512-BF16) run that product several times faster, but
its result is only good to about 3 digits. Here it only *screens*:

1. bank rows ``b`` and queries ``q`` are rounded to bfloat16 and one product gives, for
   every pair, ``A ~ |b|^2 - 2 q.b`` (the squared distance less ``|q|^2``; the ``|b|^2``
   column rides in the product as an extra coordinate). Its error is proven to stay under
   ``E(q) = 2^-6 (bmax^2 + 2 |q| bmax)`` (:func:`screen_bound`: input rounding
   ``2 u P``, the bank norms' rounding ``u |b|^2``, float32 accumulation and the output's
   rounding, ``u = 2^-8``, ``P = sum |q_i b_i| <= |q| |b|``), checked on sample rows when
   the index is built;
2. per query, the ``k`` rows of smallest ``A`` get their exact distance; ``U``, the largest of
   them, bounds the ``k``-th nearest distance from above, so any row with
   ``A > U - |q|^2 + E(q)`` (plus a relative slack far above float32 rounding) cannot be
   among the ``k`` nearest;
3. every remaining row (a few per query) gets the distance summed directly in float32, and
   the ``k`` smallest win, ties to the lower bank index.

The result is therefore the same as :class:`~defectforge.bank.knn_pruned.PrunedIndex`'s (the
``k`` smallest direct float32 sums of squares, computed by the same compiled function), and
agrees with faiss's ``|q|^2 - 2 q.b + |b|^2`` to float32 rounding. The bfloat16 values are
compared as 16-bit integers (a sign-magnitude flip makes integer order float order), so the
scans vectorise. Measured in ``docs/bench/scale.md`` (``bench/bench_knn.py``).
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange

import defectforge.bank._numba  # noqa: F401  (threading layer without OpenMP)
from defectforge.bank.knn_pruned import _insert, _sq

_U = 2.0 ** -8  # bfloat16 unit roundoff (round to nearest even)
_SLACK = 1e-3  # relative margin over the direct float32 sums' rounding (~1e-5)
_OUT_BYTES = 8 << 20  # the screening product's output per block of queries (measured: 8 MB best)


def has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (the fastest bfloat16 products; AVX512-BF16 alone,
    e.g. AMD Zen 4, is several times slower per core)."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:  # pragma: no cover - older torch without the probe
        return False


def has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AMX tiles or AVX512-BF16)."""
    import torch

    try:
        return has_amx() or bool(torch.cpu._is_avx512_bf16_supported())
    except Exception:  # pragma: no cover - older torch without the probe
        return False


def screen_bound(q_norm: np.ndarray, b_max: float) -> np.ndarray:
    """Proven bound of ``|A - (|b|^2 - 2 q.b)|`` for queries of norm ``q_norm`` against bank
    rows of norm at most ``b_max`` (module doc): ``2^-6 (b_max^2 + 2 |q| b_max)``, i.e. 4 ``u``
    on the norms' and 8 ``u`` on the product's scale, against the 2 and 6 ``u`` the rounding
    steps add up to (the float32 accumulation adds ``~(d + 1) 2^-24``, far less)."""
    return (4.0 * _U) * (b_max * b_max + 2.0 * np.asarray(q_norm, np.float64) * b_max)


@njit(cache=True, nogil=True, fastmath=True)
def _key(s):
    """bfloat16 bits (as int16) -> an int16 whose order is the float order (non-NaN)."""
    return s ^ ((s >> 15) & np.int16(0x7FFF))


_CHUNK = 64  # keys per chunk: a chunk's minimum lets the scans skip it whole


@njit(cache=True, nogil=True, fastmath=True)
def _chunk_mins(row, cm):
    """``cm[c]`` = the smallest key of chunk ``c`` of ``row``. Without turning every value
    into its key: as unsigned 16-bit integers the negative bfloat16s are the ones from
    0x8000 up, the most negative largest; so a chunk's smallest key is the key of its largest
    unsigned value when that one is negative, else its smallest unsigned value (two plain
    reductions over fixed-length loops, which vectorise)."""
    u = row.view(np.uint16)
    N = u.shape[0]
    full = N // _CHUNK
    for c in range(full):
        ch = u[c * _CHUNK:(c + 1) * _CHUNK]
        lo = np.uint16(65535)
        hi = np.uint16(0)
        for j in range(_CHUNK):
            v = ch[j]
            lo = min(lo, v)
            hi = max(hi, v)
        cm[c] = _key(np.int16(hi)) if hi >= np.uint16(0x8000) else np.int16(lo)
    if full < cm.shape[0]:
        lo = np.uint16(65535)
        hi = np.uint16(0)
        for j in range(full * _CHUNK, N):
            v = u[j]
            lo = min(lo, v)
            hi = max(hi, v)
        cm[full] = _key(np.int16(hi)) if hi >= np.uint16(0x8000) else np.int16(lo)


@njit(cache=True, nogil=True)
def _smallest(row, cm, k, kk, ki):
    """The ``k`` smallest keys of ``row`` into ``kk``/``ki`` (sorted, ties to the lower index),
    skipping chunks whose minimum cannot enter the list."""
    N = row.shape[0]
    kk[:] = 32767  # sentinels: above every non-NaN key, at an index past the row
    ki[:] = N
    for c in range(cm.shape[0]):
        if cm[c] > kk[k - 1]:
            continue
        for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
            _insert(kk, ki, _key(row[j]), j)


@njit(cache=True, nogil=True)
def _thr_key(t, f1):
    """The key of the smallest bfloat16 >= float32 ``t`` (rounded towards +inf); ``f1`` is a
    one-element float32 scratch array (its bits are read through a view)."""
    f1[0] = t
    b = f1.view(np.uint32)[0]
    hi = np.uint32(b >> np.uint32(16))
    if (b & np.uint32(0xFFFF)) != 0 and (b >> np.uint32(31)) == 0:
        hi += np.uint32(1)  # positive: up; negative: truncation is already towards +inf
    s = np.int16(np.uint16(hi))
    return _key(s)


@njit(cache=True, nogil=True)
def _rows(r0, r1, tile, q, B, qsq, eq, k, out_d, out_i, counts):
    """Steps 2 and 3 of the module doc for the query rows ``r0:r1`` of ``tile``."""
    N = tile.shape[1]
    cm = np.empty((N + _CHUNK - 1) // _CHUNK, np.int16)  # scratch, once per group of rows
    kk = np.empty(k, np.int16)
    ki = np.empty(k, np.int64)
    f1 = np.empty(1, np.float32)
    for r in range(r0, r1):
        row = tile[r]
        _chunk_mins(row, cm)
        if k == 1:  # the first row of the smallest key: its chunk, then its place in the chunk
            c = np.argmin(cm)
            for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
                if _key(row[j]) == cm[c]:
                    ki[0] = j
                    break
        else:
            _smallest(row, cm, k, kk, ki)
        U = 0.0
        for t in range(k):
            U = max(U, np.float64(_sq(q[r], B[ki[t]])))
        thr = _thr_key(np.float32(U - qsq[r] + eq[r] + _SLACK * U), f1)
        bd = out_d[r]
        bi = out_i[r]
        bd[:] = np.inf
        bi[:] = -1
        seen = 0
        for c in range(cm.shape[0]):
            if cm[c] > thr:
                continue
            for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
                if _key(row[j]) <= thr:
                    seen += 1
                    d = _sq(q[r], B[j])
                    if d <= bd[k - 1]:
                        _insert(bd, bi, d, j)
        counts[r] = seen


@njit(cache=True, nogil=True, parallel=True)
def _decide_par(tile, q, B, qsq, eq, k, out_d, out_i, counts):
    n = q.shape[0]
    groups = min(n, 16)
    for g in prange(groups):
        _rows(g * n // groups, (g + 1) * n // groups, tile, q, B, qsq, eq, k, out_d, out_i, counts)


@njit(cache=True, nogil=True)
def _decide_seq(tile, q, B, qsq, eq, k, out_d, out_i, counts):
    _rows(0, q.shape[0], tile, q, B, qsq, eq, k, out_d, out_i, counts)


class ScreenedIndex:
    """``ScreenedIndex(bank).search(queries, k) -> (squared dist (n, k) float32, idx (n, k))``,
    the same neighbours and distances as :class:`~defectforge.bank.knn_pruned.PrunedIndex`
    (see the module doc). Raises ``RuntimeError`` when this machine's bfloat16 product
    breaks the error bound on sample rows (then use another backend). Searches on one index
    run one at a time (they share the product's output buffer)."""

    def __init__(self, bank: np.ndarray, seed: int = 0):
        import torch

        self.B = np.ascontiguousarray(bank, dtype=np.float32)
        N, D = self.B.shape
        self.width = (D + 1 + 31) // 32 * 32  # room for the |b|^2 column, padded for the tiles
        b64 = self.B.astype(np.float64)
        sq = (b64 * b64).sum(1)
        self.b_max = float(np.sqrt(sq.max())) if N else 0.0
        bt = np.zeros((self.width, N), np.float32)
        bt[:D] = -2.0 * self.B.T  # exact in bfloat16 after rounding B (a power of two)
        bt[D] = sq
        self._bt = torch.from_numpy(bt).to(torch.bfloat16).contiguous()
        self._block = int(max(16, min(4096, _OUT_BYTES // max(1, 2 * N))))
        self._lock = threading.Lock()
        self._out = None
        self.last_candidates = float("nan")  # mean rows given a direct distance per query, last search
        if N:
            self._check(seed, b64, sq)

    def _screen(self, q: np.ndarray):
        """The screening product for the query rows ``q`` (a view of the shared buffer)."""
        import torch

        n, D = q.shape
        qa = torch.empty((n, self.width), dtype=torch.bfloat16)
        qa[:, :D] = torch.from_numpy(q)  # rounded to bfloat16 in the copy
        qa[:, D] = 1.0
        qa[:, D + 1:] = 0.0
        if self._out is None or self._out.shape[0] < n:  # kept: a fresh buffer costs page faults
            self._out = torch.empty((n, self._bt.shape[1]), dtype=torch.bfloat16)
        out = self._out[:n]
        torch.mm(qa, self._bt, out=out)
        return out.view(torch.int16).numpy()

    def _check(self, seed: int, b64: np.ndarray, sq: np.ndarray) -> None:
        """The bound of :func:`screen_bound` holds on sample rows (this machine's product);
        ``b64``, ``sq``: the bank in float64 and its squared norms."""
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(self.B))[:64]
        q = self.B[pick] * np.float32(0.5) + self.B[rng.permutation(len(self.B))[:len(pick)]] * np.float32(0.5)
        keys = self._screen(q)
        a = (keys.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        q64 = q.astype(np.float64)
        exact = sq[None, :] - 2.0 * q64 @ b64.T
        err = np.abs(a - exact).max(1)
        bound = screen_bound(np.sqrt((q64 * q64).sum(1)), self.b_max)
        if not np.all(err <= bound / 2):
            raise RuntimeError("this machine's bfloat16 matrix product is less accurate than the "
                               "screened search assumes; use the 'faiss' or 'pruned' backend")

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(min(k, len(self.B)))
        n = len(q)
        out_d = np.empty((n, k), np.float32)
        out_i = np.empty((n, k), np.int64)
        seen = np.zeros(n, np.int64)
        qsq = np.einsum("ij,ij->i", q, q).astype(np.float64)  # float32 sums: within 1e-5 relative,
        eq = screen_bound(np.sqrt(qsq) * (1.0 + 1e-4), self.b_max)  # so |q| rounded up
        qsq *= 1.0 - 1e-4  # and |q|^2 down: both only widen the screen
        decide = _decide_par if n >= 64 else _decide_seq
        with self._lock:
            for s in range(0, n, self._block):
                e = min(n, s + self._block)
                tile = self._screen(q[s:e])
                decide(tile, q[s:e], self.B, qsq[s:e], eq[s:e], k, out_d[s:e], out_i[s:e], seen[s:e])
        self.last_candidates = float(seen.sum()) / max(1, n)
        return out_d, out_i
