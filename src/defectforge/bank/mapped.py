"""Projected rows in a temporary file mapped into memory, with a bound on how much of the
mapping the process keeps resident.

The coreset choice (:func:`defectforge.bank.coreset.greedy_kcenter`) reads the projected rows
many times, but after the first pass only in small places (the blocks near each new centre).
Kept in anonymous memory, the rows are the largest part of a fit's peak memory (3.9 GiB at
3,200 BSData-size images). In a file mapping they are ordinary page cache: the kernel keeps
them in RAM while RAM is free and can write them out and read them back under pressure, and
:meth:`MappedRows.release` drops this process's mapping of them (``madvise(MADV_DONTNEED)``;
for a shared file mapping the data stays in the file and its cache) once more than
``budget`` bytes of mapped file pages are resident. ``greedy_kcenter`` given a
:class:`MappedRows` cuts its work into bounded pieces and releases between them; the values,
and so the choice, are those of the same rows in memory.

Access must stay local: touching one row maps the whole page-cache folio around it (up to
~1 MiB on this machine's ext4), so the block permutation runs as sequential passes
(:meth:`MappedRows.permute`), never row by row.

    with MappedRows(n_rows, 128, dir=tmp) as m:
        m.array[s:e] = rows          # fill in order (m.release() after each batch)
        idx = greedy_kcenter(m, k)   # reorders m's rows in place
"""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

from defectforge.bank.spool import TempFile

#: resident mapped file pages (bytes) above which :meth:`MappedRows.release` drops the mapping's pages
DEFAULT_BUDGET = 256 << 20


def resident_file_bytes() -> int | None:
    """This process's resident file-backed and shared pages (``RssFile`` + ``RssShmem`` of
    ``/proc/self/status``; a file on tmpfs counts as shared memory), or None where the system
    does not say (then :meth:`MappedRows.release` always releases)."""
    total, seen = 0, 0
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith((b"RssFile:", b"RssShmem:")):
                    total += int(line.split()[1]) * 1024
                    seen += 1
    except (OSError, ValueError, IndexError):
        return None
    return total if seen == 2 else None


class MappedRows(TempFile):
    """A ``(n_rows, width)`` float32 array in a temporary file (``dir`` or ``$TMPDIR``), mapped
    shared and read-write; the file is deleted on :meth:`close` (as :class:`~.spool.TempFile`)."""

    def __init__(self, n_rows: int, width: int, dir: str | None = None, budget: int = DEFAULT_BUDGET):
        self.shape = (int(n_rows), int(width))
        self.budget = int(budget)
        self.releases = 0
        nbytes = max(1, self.shape[0] * self.shape[1] * 4)
        fd = self._make("defectforge-projected-", ".f32", dir)
        try:
            if hasattr(os, "posix_fallocate"):  # disk blocks reserved now: a full disk fails here, not later
                os.posix_fallocate(fd, 0, nbytes)  # (a write to an unbacked mapped page would be a SIGBUS)
            else:
                os.ftruncate(fd, nbytes)
            self._mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except Exception:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self.array = np.ndarray(self.shape, np.float32, buffer=self._mm)
        base = resident_file_bytes()
        self._limit = None if base is None else base + self.budget

    def release(self, force: bool = False) -> bool:
        """Drop this process's resident pages of the mapping when they exceed the budget (or
        ``force``); True when it did. The data stays in the file (page cache or disk)."""
        if self._mm.closed:
            return False
        if not force and self._limit is not None:
            now = resident_file_bytes()
            if now is not None and now <= self._limit:
                return False
        if hasattr(self._mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)
            self.releases += 1
            return True
        return False

    def permute(self, perm: np.ndarray, chunk_rows: int = 1 << 16, bucket_rows: int = 1 << 18) -> bool:
        """In place: row ``i`` becomes the old row ``perm[i]``, by sequential passes only (a
        random row of a mapping maps up to a large folio, ~1 MiB here, around it): the rows are
        read in chunks and appended, with their destination, to one file per range of
        ``bucket_rows`` destinations; then each range is filled from its file. Needs as much
        free disk again as the rows; :meth:`release` after every chunk and range. Returns
        False, the rows untouched, when the first pass cannot write its files (e.g. the disk
        is full); True when done."""
        N, d = self.shape
        x = self.array
        perm = np.asarray(perm, dtype=np.int64)
        if perm.shape != (N,):
            raise ValueError(f"perm must have {N} entries, got {perm.shape}")
        dest_of = np.empty(N, np.int64)
        dest_of[perm] = np.arange(N)
        bucket_rows = max(int(bucket_rows), -(-N // 256))  # at most 256 open files
        nb = max(1, -(-N // bucket_rows))
        rec = np.dtype([("dest", "<i8"), ("row", "<f4", (d,))])
        with tempfile.TemporaryDirectory(prefix="defectforge-permute-", dir=os.path.dirname(self.path)) as tmp:
            files: list = []
            try:
                try:
                    files.extend(open(os.path.join(tmp, f"{b}.rec"), "w+b") for b in range(nb))
                    self._scatter(x, dest_of, files, rec, chunk_rows, bucket_rows, nb)
                except OSError:
                    return False  # nothing of the mapping written yet
                del dest_of
                for b, f in enumerate(files):
                    f.seek(0)
                    part = np.frombuffer(f.read(), rec)
                    f.close()
                    os.unlink(f.name)
                    x[part["dest"]] = part["row"]  # all within rows b * bucket_rows ... + bucket_rows
                    del part
                    self.release()
            finally:
                for f in files:
                    f.close()
        return True

    def _scatter(self, x, dest_of, files, rec, chunk_rows, bucket_rows, nb) -> None:
        """The first pass of :meth:`permute`: every row, with its destination, to its range's file."""
        N = x.shape[0]
        for s in range(0, N, chunk_rows):
            e = min(N, s + chunk_rows)
            dest = dest_of[s:e]
            order = np.argsort(dest // bucket_rows, kind="stable")
            part = np.empty(e - s, rec)
            part["dest"] = dest[order]
            part["row"] = x[s:e][order]
            cuts = np.searchsorted(part["dest"] // bucket_rows, np.arange(nb + 1))
            for b in np.flatnonzero(np.diff(cuts)):
                files[b].write(part[cuts[b]:cuts[b + 1]].tobytes())
            for f in files:
                f.flush()  # a full disk shows here, inside the first pass
            self.release()

    def _release(self) -> None:
        """Unmap (once no array uses the mapping any more); :meth:`close` then deletes the file."""
        self.array = None
        try:
            self._mm.close()
        except BufferError:  # a view is still alive: the mapping goes with it
            pass
