"""Two ways around the exact pruned search at predict time, tried on 2026-12-06 (not built):

1. a float32-screened exact search (the `screened` backend's scheme with a float32 product
   instead of bfloat16: one ``addmm`` gives ``|b|^2 - 2 q.b``, the rows within its proven
   rounding bound of the smallest get a direct distance): the same neighbours and distances
   as ``pruned``;
2. faiss ``IndexIVFFlat`` (approximate: ``nlist = 4 sqrt(N)`` lists, ``nprobe`` of them
   searched): recall of the exact nearest row and the excess distance.

Same query rows (the patch rows of the first ``--n`` BSData test images) and banks (the
normal banks of two default fits), each backend timed alternately, best of ``--reps``.

    SRC=src python bench/results/scale_icelake_search/predict_alternatives.py EXDD.pt PC.pt [--n 16] [--reps 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.environ.get("SRC", "src"))
import torch  # noqa: E402
from numba import njit, prange  # noqa: E402

import defectforge.bank._numba  # noqa: E402,F401
from defectforge.bank.knn_pruned import PrunedIndex, _insert, _sq  # noqa: E402

CH = 64


@njit(nogil=True, fastmath=True)
def _cmins(row, cm):
    N = row.shape[0]
    for c in range(cm.shape[0]):
        m = np.float32(np.inf)
        for j in range(c * CH, min(N, (c + 1) * CH)):
            m = min(m, row[j])
        cm[c] = m


@njit(nogil=True)
def _rows(r0, r1, tile, q, B, qsq, eq, k, out_d, out_i):
    N = tile.shape[1]
    cm = np.empty((N + CH - 1) // CH, np.float32)
    kk = np.empty(k, np.float32)
    ki = np.empty(k, np.int64)
    for r in range(r0, r1):
        row = tile[r]
        _cmins(row, cm)
        kk[:] = np.inf
        ki[:] = N
        for c in range(cm.shape[0]):
            if cm[c] <= kk[k - 1]:
                for j in range(c * CH, min(N, (c + 1) * CH)):
                    if row[j] <= kk[k - 1]:
                        _insert(kk, ki, row[j], j)
        U = 0.0
        for t in range(k):
            U = max(U, np.float64(_sq(q[r], B[ki[t]])))
        thr = U - qsq[r] + eq[r] + 1e-3 * U
        bd, bi = out_d[r], out_i[r]
        bd[:] = np.inf
        bi[:] = -1
        for c in range(cm.shape[0]):
            if cm[c] <= thr:
                for j in range(c * CH, min(N, (c + 1) * CH)):
                    if row[j] <= thr:
                        d = _sq(q[r], B[j])
                        if d <= bd[k - 1]:
                            _insert(bd, bi, d, j)


@njit(nogil=True, parallel=True)
def _par(tile, q, B, qsq, eq, k, out_d, out_i):
    n = q.shape[0]
    g = min(n, 16)
    for t in prange(g):
        _rows(t * n // g, (t + 1) * n // g, tile, q, B, qsq, eq, k, out_d, out_i)


class Screen32:
    """Float32-screened exact k-NN (bound: 2^-14 (bmax^2 + 2 |q| bmax), >> (d + 2) 2^-24)."""

    def __init__(self, bank):
        self.B = np.ascontiguousarray(bank, np.float32)
        sq = (self.B.astype(np.float64) ** 2).sum(1)
        self.b_max = float(np.sqrt(sq.max()))
        self.bt = torch.from_numpy(np.ascontiguousarray(-2.0 * self.B.T))
        self.bsq = torch.from_numpy(sq.astype(np.float32))
        self.block = max(16, min(4096, (8 << 20) // (4 * len(self.B))))

    def search(self, q, k=1):
        n = len(q)
        out_d, out_i = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
        qsq = np.einsum("ij,ij->i", q, q).astype(np.float64)
        eq = 2.0 ** -14 * (self.b_max ** 2 + 2 * np.sqrt(qsq) * 1.0001 * self.b_max)
        qsq *= 1 - 1e-4
        buf = torch.empty((self.block, len(self.B)), dtype=torch.float32)
        for s in range(0, n, self.block):
            e = min(n, s + self.block)
            o = buf[: e - s]
            torch.addmm(self.bsq, torch.from_numpy(q[s:e]), self.bt, out=o)
            _par(o.numpy(), q[s:e], self.B, qsq[s:e], eq[s:e], k, out_d[s:e], out_i[s:e])
        return out_d, out_i


def best(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    import faiss

    from defectforge.bank.features import to_rgb
    from defectforge.data import load_dataset
    from defectforge.detect import load_detector

    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="../shared/datasets/bsdata")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    test = [s for s in load_dataset(a.data) if s.split == "test"][: a.n]
    rgbs = [to_rgb(s) for s in test]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, {a.n} test images; "
          f"load {os.getloadavg()[0]:.2f}")
    for path in a.models:
        m = load_detector(path)
        rows = np.concatenate([m._rows(rgbs[i:i + 4]) for i in range(0, len(rgbs), 4)])
        bank = m.bank_normal_
        N, D = bank.shape
        p, s = PrunedIndex(bank), Screen32(bank)
        de, ie = p.search(rows, 1)
        ds, is_ = s.search(rows, 1)
        tp, ts = best(lambda: p.search(rows, 1), a.reps), best(lambda: s.search(rows, 1), a.reps)
        print(f"{os.path.basename(path)} ({N:,} rows): pruned {1000 * tp / a.n:.1f} ms/image, float32 screen "
              f"{1000 * ts / a.n:.1f} (same neighbours {np.array_equal(ie, is_)}, same distances {np.array_equal(de, ds)})")
        nlist = int(4 * N ** 0.5)
        ix = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, nlist)
        t = time.perf_counter()
        ix.train(bank)
        ix.add(bank)
        tb = time.perf_counter() - t
        for nprobe in (1, 4, 8, 16):
            ix.nprobe = nprobe
            t = best(lambda: ix.search(rows, 1), a.reps)
            d, i = ix.search(rows, 1)
            ex = np.sqrt(np.maximum(d[:, 0], 0)) - np.sqrt(np.maximum(de[:, 0], 0))
            print(f"  IVF nlist {nlist} (build {tb:.1f} s) nprobe {nprobe}: {1000 * t / a.n:.1f} ms/image, "
                  f"recall@1 {(i[:, 0] == ie[:, 0]).mean():.4f}, excess distance mean {ex.mean():.4f} max {ex.max():.2f} "
                  f"(mean NN distance {np.sqrt(np.maximum(de[:, 0], 0)).mean():.2f})")


if __name__ == "__main__":
    main()
