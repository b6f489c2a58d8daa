"""Nearest-neighbour search of patch rows in a memory bank.

Interchangeable backends, all exact and fp32 except the opt-in ``"ivf"``:

- ``"faiss"``: ``faiss.IndexFlatL2`` (BLAS, multi-threaded).
- ``"pruned"``: :class:`~defectforge.bank.knn_pruned.PrunedIndex`, lower bounds on the bank's
  principal axes skip most rows (CPU, numba); the same neighbours, distances summed directly.
- ``"screened"``: :class:`~defectforge.bank.knn_screened.ScreenedIndex`, a bfloat16 matrix
  product (AMX / AVX512-BF16) screens, direct float32 distances decide; the same neighbours
  and distances as ``"pruned"``.
- ``"auto"`` (the detectors' default), on the CPU: ``"screened"`` for banks of
  ``SCREENED_MIN_ROWS`` up to :func:`screened_max_rows` rows (``SCREENED_MAX_ROWS`` with Intel
  AMX tiles, ``SCREENED_MAX_ROWS_AVX512`` with AVX512-BF16 alone, where the product is several
  times slower) when the CPU multiplies bfloat16
  natively and the product passes the screen's accuracy check; otherwise ``"pruned"`` for banks
  of at least ``PRUNED_MIN_ROWS`` rows, else ``"faiss"`` (each where it is measured fastest:
  on a CPU without bfloat16 units faiss's flat search was 1.3-5x slower than ``"pruned"`` from
  1,024 rows up, ``docs/bench/scale.md``; tiny banks, e.g. ExDD's defect bank, stay flat).
- ``"torch"``: chunked ``||q||^2 - 2 q.b + ||b||^2`` matmul (chunks of query rows keep the
  distance matrix small), ``topk``; on ``device="cuda"`` the bank lives on the GPU (the
  faiss backend is CPU only, so a CUDA device always uses this one).
- ``"ivf"`` / ``"ivf:N"`` (**approximate**, opt-in, never chosen by ``"auto"``): the pruned
  index's clusters used as inverted lists, each query searches only its ``N`` (default
  ``IVF_PROBES``) nearest clusters (like faiss's ``IndexIVFFlat`` with ``nprobe``); a nearest
  row in another cluster is missed, so distances can only come out larger than the exact ones.
  Banks under ``PRUNED_MIN_ROWS`` rows are searched exactly (flat). Its effect on the metrics
  is measured in ``docs/detectors.md``.

Queries are searched in batches (all patch rows of a batch of images at once).

Distances returned are Euclidean (not squared), clamped at 0 before the square root.
"""

from __future__ import annotations

import numpy as np

from defectforge.errors import ConfigError


PRUNED_MIN_ROWS = 1024
SCREENED_MIN_ROWS = 1024
SCREENED_MAX_ROWS = 65536  # with AMX tiles (the Intel Xeon of 2026-12-05, docs/detectors.md)
#: without AMX (AVX512-BF16 only): the screened search's product and scan grow with the bank, the
#: pruned search's work much less; on the AMD EPYC (Zen 4) of 2026-12-07, 2 threads, PatchCore's
#: BSData bank cut to N rows: screened / pruned 21.8 / 35.3 ms per image at 9,151 rows, 39.0 / 47.2
#: at 16,384, 63.9 / 52.2 at 24,576, 142.3 / 67.2 at 45,504 (docs/bench/scale_amd.md)
SCREENED_MAX_ROWS_AVX512 = 20480
IVF_PROBES = 8
BACKENDS = ("auto", "faiss", "pruned", "screened", "torch", "ivf")


def check_backend(backend: str) -> tuple[str, int]:
    """``(name, probes)`` of a backend spelling (``"ivf:16"`` -> ``("ivf", 16)``); one-line
    error for anything else."""
    name, sep, n = str(backend).partition(":")
    if name in BACKENDS and not sep:
        return name, (IVF_PROBES if name == "ivf" else 0)
    if name == "ivf" and n.isdigit() and int(n) >= 1:
        return name, int(n)
    raise ConfigError(f"nn backend must be one of {', '.join(BACKENDS)} (or ivf:N, N >= 1 clusters searched), "
                      f"got {backend!r}")


def screened_max_rows() -> int:
    """Bank rows up to which ``"auto"`` uses the screened search (speed only: both searches
    return the same neighbours): ``SCREENED_MAX_ROWS`` on a CPU with AMX tiles, else at most
    ``SCREENED_MAX_ROWS_AVX512``."""
    from defectforge.bank.knn_screened import has_amx

    return SCREENED_MAX_ROWS if has_amx() else min(SCREENED_MAX_ROWS, SCREENED_MAX_ROWS_AVX512)


def _auto_backend(bank: np.ndarray):
    """``(name, index or None)`` that ``"auto"`` picks for ``bank`` on the CPU."""
    from defectforge.bank.knn_screened import has_fast_bf16

    if SCREENED_MIN_ROWS <= len(bank) < screened_max_rows() and has_fast_bf16():
        try:
            return "screened", _cpu_index("screened", bank)
        except ConfigError:  # this machine's product is not accurate enough for the screen
            pass
    return ("pruned" if len(bank) >= PRUNED_MIN_ROWS else "faiss"), None


def _cpu_index(backend: str, bank: np.ndarray, probes: int = 0):
    """The index of a CPU backend over ``bank`` (``None`` for ``"torch"``)."""
    if backend == "ivf":
        if len(bank) < PRUNED_MIN_ROWS:  # a small bank: the flat search is exact and cheap
            return _cpu_index("faiss", bank)
        from defectforge.bank.knn_pruned import PrunedIndex

        return PrunedIndex(bank, probes=probes)
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatL2(bank.shape[1])
        index.add(bank)
        return index
    if backend == "pruned":
        from defectforge.bank.knn_pruned import PrunedIndex

        return PrunedIndex(bank)
    if backend == "screened":
        from defectforge.bank.knn_screened import ScreenedIndex

        try:
            return ScreenedIndex(bank)
        except RuntimeError as exc:
            raise ConfigError(f"nn backend 'screened': {exc}") from None
    return None


class NearestNeighbors:
    """``NearestNeighbors(bank, backend).search(queries, k) -> (dist, idx)``."""

    def __init__(self, bank: np.ndarray, backend: str = "faiss", chunk: int = 2048, device: str = "cpu"):
        backend, probes = check_backend(backend)
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.device = device
        self._index = None
        if device != "cpu":
            backend = "torch"
        elif backend == "auto":
            backend, self._index = _auto_backend(self.bank)
        self.backend = backend
        self.chunk = int(chunk)
        self._dev_bank = None
        if self._index is None and len(self.bank):
            self._index = _cpu_index(backend, self.bank, probes)
        if self._index is None:  # the torch path (and empty banks)
            self._bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)

    def __len__(self) -> int:
        return int(self.bank.shape[0])

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(dist (n, k) float32, idx (n, k) int64)`` of the ``k`` nearest bank rows."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(min(k, len(self)))
        if k <= 0:
            raise ConfigError("nearest-neighbour search in an empty bank")
        if self._index is not None:
            d2, idx = self._index.search(q, k)
        else:
            d2, idx = self._search_torch(q, k)
        np.maximum(d2, 0.0, out=d2)
        return np.sqrt(d2, out=d2), idx.astype(np.int64, copy=False)

    def _search_torch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self._dev_bank is None:
            self._dev_bank = (torch.from_numpy(self.bank).to(self.device), torch.from_numpy(self._bank_sq).to(self.device))
        bank, bsq = self._dev_bank
        out_d = np.empty((q.shape[0], k), np.float32)
        out_i = np.empty((q.shape[0], k), np.int64)
        for s in range(0, q.shape[0], self.chunk):
            qq = torch.from_numpy(q[s:s + self.chunk]).to(self.device)
            d2 = torch.addmm(bsq[None, :], qq, bank.T, beta=1.0, alpha=-2.0)
            d2 += (qq * qq).sum(1, keepdim=True)
            if k == 1:
                v, i = d2.min(1, keepdim=True)
            else:
                v, i = torch.topk(d2, k, dim=1, largest=False, sorted=True)
            out_d[s:s + len(qq)] = v.cpu().numpy()
            out_i[s:s + len(qq)] = i.cpu().numpy()
        return out_d, out_i
