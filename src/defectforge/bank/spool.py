"""Rows kept on disk while a bank is chosen: only the (small) projected rows stay in memory
for the coreset selection; the full rows are appended to a temporary file and the chosen
ones read back in one sequential pass. Page cache is not process memory, so peak RSS
follows the projected rows, not the full feature matrix.

    with RowSpool(width=152) as sp:
        sp.append(rows)               # as many times as needed, (n, width) float32
        bank = sp.gather(sorted_idx)  # (len(idx), width) float32, in idx order
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


class TempFile:
    """Owns a file made in the temporary folder (``dir`` or ``$TMPDIR``): deleted by
    :meth:`close`, at the end of a ``with`` block, or when the object is collected. Subclasses
    release their handle in :meth:`_release`."""

    path: str

    def _make(self, prefix: str, suffix: str, dir: str | None) -> int:
        fd, self.path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dir)
        return fd

    def _release(self) -> None:
        pass

    def close(self) -> None:
        self._release()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class RowSpool(TempFile):
    """Append-only float32 row file in the temporary folder (``dir`` or ``$TMPDIR``), deleted on close."""

    def __init__(self, width: int, dir: str | None = None):
        self.width = int(width)
        self._f = os.fdopen(self._make("defectforge-rows-", ".f32", dir), "w+b")
        self.n_rows = 0

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows must be (n, {self.width}), got {rows.shape}")
        self._f.write(rows.tobytes())
        self.n_rows += len(rows)

    def gather(self, idx: np.ndarray, chunk_rows: int = 65536) -> np.ndarray:
        """The rows ``idx`` (sorted ascending, unique) read back in one pass."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= self.n_rows):
            raise ValueError("gather needs sorted unique indices within the spool")
        self._f.flush()
        out = np.empty((len(idx), self.width), np.float32)
        row_bytes = 4 * self.width
        pos = 0
        for s in range(0, self.n_rows, chunk_rows):
            e = min(s + chunk_rows, self.n_rows)
            hi = int(np.searchsorted(idx, e))
            if hi > pos:
                self._f.seek(s * row_bytes)
                block = np.frombuffer(self._f.read((e - s) * row_bytes), np.float32).reshape(e - s, self.width)
                out[pos:hi] = block[idx[pos:hi] - s]
                pos = hi
        return out

    def _release(self) -> None:
        if not self._f.closed:
            self._f.close()
