"""Opt-in approximate coreset: the exact greedy k-center choice made per chunk of images.

The exact choice over all rows (:func:`~defectforge.bank.coreset.greedy_kcenter`, the
default) costs close to the square of the number of training images and holds every
projected row in memory. :class:`ChunkedKCenter` cuts the rows, in input order and on
image boundaries, into chunks of about ``chunk_images`` images, makes the exact greedy
choice inside each chunk as soon as the chunk is complete (while the next images are
still being read) and keeps the union: the same ratio of every chunk. Cost and memory are
then linear in the number of images (one chunk of projected rows in memory at a time).

What it gives up: a farthest-first traversal of each chunk covers that chunk, not the
others, so rows that repeat across chunks (the same part seen again) are kept once per
chunk; the bank has the same size but a larger coverage radius than the exact choice.
Its effect on every metric is measured in ``docs/bench/scale_chunked.md``.

    ch = ChunkedKCenter(n_images=402, rows_per_image=2528, chunk_images=100, ratio=0.1, seed=0)
    for rows in projected_batches:   # in input order
        ch.add(rows)
    idx = ch.finish()                # sorted global row indices
"""

from __future__ import annotations

import numpy as np

from defectforge.bank.coreset import coreset_size, greedy_kcenter


def chunk_bounds(n_images: int, chunk_images: int) -> list[int]:
    """Image indices where the chunks start (and the end): ``round(n / chunk_images)``
    chunks (at least one) of as equal a size as possible."""
    if n_images <= 0:
        return [0]
    k = max(1, int(round(n_images / max(1, int(chunk_images)))))
    return [int(round(j * n_images / k)) for j in range(k + 1)]


class ChunkedKCenter:
    """Greedy k-center per consecutive chunk of images; see the module doc.

    ``add`` takes projected rows in input order (any batch size; a batch may cross a
    chunk's end); ``finish`` returns the chosen global row indices, sorted. Every chunk's
    target is :func:`coreset_size` of its rows at ``ratio`` (``minimum`` and ``maximum`` are
    shared out in proportion to the rows); chunk 0 is seeded with ``seed``, chunk ``j > 0`` from
    ``(seed, j)``. ``seconds`` adds up the time of the choices.
    """

    def __init__(self, n_images: int, rows_per_image: int, chunk_images: int, ratio: float, seed: int = 0,
                 minimum: int = 0, maximum: int | None = None):
        if chunk_images < 1 or rows_per_image < 1:
            raise ValueError(f"chunk_images and rows_per_image must be >= 1, got {chunk_images}, {rows_per_image}")
        self.rows_per_image = int(rows_per_image)
        self.bounds = [b * self.rows_per_image for b in chunk_bounds(n_images, chunk_images)]
        self.n_rows = self.bounds[-1]
        self.ratio, self.seed, self.minimum = float(ratio), int(seed), int(minimum)
        self.maximum = None if maximum is None else int(maximum)
        self.seconds = 0.0
        self._buf: np.ndarray | None = None
        self._j = 0          # current chunk
        self._seen = 0       # rows added so far (global)
        self._chosen: list[np.ndarray] = []

    @property
    def n_chunks(self) -> int:
        return len(self.bounds) - 1

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32)
        if self._seen + len(rows) > self.n_rows:
            raise ValueError(f"more rows than planned ({self._seen + len(rows)} > {self.n_rows})")
        while len(rows):
            start, end = self.bounds[self._j], self.bounds[self._j + 1]
            if self._buf is None:
                self._buf = np.empty((end - start, rows.shape[1]), np.float32)
            take = min(len(rows), end - self._seen)
            self._buf[self._seen - start:self._seen - start + take] = rows[:take]
            self._seen += take
            rows = rows[take:]
            if self._seen == end:
                self._choose()

    def _choose(self) -> None:
        import time

        start, end = self.bounds[self._j], self.bounds[self._j + 1]
        n = end - start
        share = int(np.ceil(self.minimum * n / self.n_rows)) if self.minimum else 0
        cap = None if self.maximum is None else self.maximum * n // self.n_rows  # shares add up to <= maximum
        # chunk 0 keeps the seed itself, so one chunk is exactly the exact choice over all rows
        seed = self.seed if self._j == 0 else int(np.random.default_rng([self.seed, self._j]).integers(2 ** 31))
        t0 = time.perf_counter()
        idx = greedy_kcenter(self._buf, coreset_size(n, self.ratio, share, cap), seed=seed, overwrite_x=True)
        self.seconds += time.perf_counter() - t0
        self._chosen.append(np.sort(idx) + start)
        self._buf = None
        self._j += 1

    def finish(self) -> np.ndarray:
        """The chosen global row indices, sorted (all chunks must have been added)."""
        if self._seen != self.n_rows:
            raise ValueError(f"{self._seen} rows added, {self.n_rows} planned")
        return np.concatenate(self._chosen) if self._chosen else np.zeros(0, np.int64)
