"""Where PatchCore / ExDD predict time goes on this CPU: backbone rows, normal-bank search (and its
cluster-bound part), predict end to end; 32 BSData test images (every 12th).

    SRC=path/to/src python bench/results/scale_icelake_search/predprof.py MODEL.pt

(run from the repository root, ``../shared`` beside it; ``SRC`` picks the checkout whose code is
timed, e.g. a worktree of an older commit, so that two versions can be run alternately on the same
model file). The throw-away script behind ``ab_predict_*.txt``."""
import os
import sys
import time
import numpy as np
sys.path.insert(0, os.environ.get("SRC", "src"))
from numba import njit, prange
import defectforge.bank._numba  # noqa
from defectforge.bank.knn_pruned import _sq
from defectforge.detect.base import load_detector
from defectforge.data import load_dataset

@njit(cache=False, nogil=True, parallel=True)
def cluster_bounds(qp, qr, cp, crad, rlo, rhi, out):
    K = cp.shape[0]
    for i in prange(qp.shape[0]):
        s = 0.0
        for c in range(K):
            dc = np.sqrt(np.float64(_sq(qp[i], cp[c])))
            a = max(0.0, dc - crad[c])
            g = max(0.0, rlo[c] - qr[i], qr[i] - rhi[c])
            s += a * a + g * g
        out[i] = s

m = load_detector(sys.argv[1])
ds = load_dataset(os.environ.get("DATA", "../shared/datasets/bsdata")).filter(split="test")
items = list(ds)[::12][:32]
rgbs = [s.rgb() for s in items]
T = time.perf_counter
m.predict(items[:2])
t = T(); m.predict(items); tp = (T() - t) / len(items)
t = T(); rows = np.concatenate([m._rows(rgbs[i:i + 16]) for i in range(0, len(rgbs), 16)]); tb = (T() - t) / len(items)
nn = m._nn_normal
print("backend", nn.backend, "bank", len(nn), "rows", rows.shape)
nn.search(rows[:4096], 1)
t = T(); nn.search(rows, 1); ts = (T() - t) / len(items)
ix = nn._index
frac = getattr(ix, "last_fraction", float("nan"))
if hasattr(ix, "cp"):
    c = rows - ix.mu
    qp64 = c @ ix.P
    qr = np.sqrt(np.maximum((c * c).sum(1) - (qp64 * qp64).sum(1), 0.0))
    qp = np.ascontiguousarray(qp64, np.float32)
    out = np.empty(len(rows))
    cluster_bounds(qp[:64], qr[:64], ix.cp, ix.crad, ix.rlo, ix.rhi, out[:64])
    t = T(); cluster_bounds(qp, qr, ix.cp, ix.crad, ix.rlo, ix.rhi, out); tc = (T() - t) / len(items)
else:
    tc = float("nan")
print(f"predict {tp*1000:.1f} ms/img; backbone rows {tb*1000:.1f}; normal search {ts*1000:.1f} (cluster bounds {tc*1000:.1f}, clusters {len(getattr(ix, 'cp', []))}, rows fully compared {frac:.4%})")

if hasattr(ix, "cp") and len(sys.argv) > 2:
    d, _ = ix.search(rows[:2000], 1)
    lim = d[:, 0].astype(np.float64) * (1 + 1e-3)
    sub = slice(0, 2000)
    dc = np.sqrt(((qp[sub, None, :].astype(np.float64) - ix.cp[None].astype(np.float64)) ** 2).sum(2))
    a = np.maximum(0, dc - ix.crad[None])
    g = np.maximum(0, np.maximum(ix.rlo[None] - qr[sub, None], qr[sub, None] - ix.rhi[None]))
    clb = a * a + g * g
    sizes = np.diff(ix.starts)
    scanned = ((clb <= lim[:, None]) * sizes[None]).sum(1)
    print(f"rows in clusters whose bound is within the final NN distance: mean {scanned.mean():.0f} of {len(ix.B)} ({scanned.mean()/len(ix.B):.2%}); clusters {(clb <= lim[:, None]).sum(1).mean():.1f}")
