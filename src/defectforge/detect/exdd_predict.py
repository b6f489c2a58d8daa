"""ExDD scoring: nearest-neighbour search against the banks, anomaly maps and image scores.

:class:`PatchScoreMixin` holds :meth:`~PatchScoreMixin.predict` of
:class:`~defectforge.detect.exdd.ExDD` (and so of PatchCore) and the scoring it shares with
fitting's validation step: the per-patch ratio ``d-(p) / (d+(p) + eps)`` (``d-(p)`` alone
without a defect bank), the smoothed map at the input size, and the raw image scores
(:func:`~defectforge.detect.image_score.raw_scores`) including the bank-weighted max-min
distance (:mod:`~defectforge.detect.scoring`).

The mixin relies on what :class:`~defectforge.detect.exdd.ExDD` defines (``config``, ``_rows``,
the fitted banks and the chosen image score).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from defectforge.detect.base import Prediction

#: normal-bank rows for which overlapped scoring pays (2 threads, screened search): the search's
#: cost grows with the bank, the backbone's does not. Measured on BSData-size images (both costs
#: grow with the image the same way, so the ratio is the bank's): the backbone (+ reading) takes
#: 21 ms per image on 2 threads and 34 on 1, the search + maps 4 + 1.8 ms per 1,000 rows on 2
#: threads and 5 + 2.6 on 1; side by side wins from ~4,900 to ~26,500 rows (docs/detectors.md).
OVERLAP_ROWS = (5_000, 26_000)


class PatchScoreMixin:
    """``predict`` and the patch / image scoring of :class:`~defectforge.detect.exdd.ExDD`."""

    def _make_indexes(self, normal: Any = None) -> None:
        """The search indexes of both banks; ``normal``: an index of ``bank_normal_`` already
        built with the current ``nn_backend`` and ``device`` (reused, not rebuilt)."""
        from defectforge.bank.knn import NearestNeighbors

        c = self.config
        self._nn_key = (c.nn_backend, c.device)
        self._nn_normal = normal if normal is not None else NearestNeighbors(self.bank_normal_, c.nn_backend,
                                                                             device=c.device)
        self._nn_defect = (NearestNeighbors(self.bank_defect_, c.nn_backend, device=c.device)
                           if len(self.bank_defect_) else None)

    def predict(self, images: Iterable[Any]) -> Prediction:
        """Scores, maps (at each image's own size), labels and masks for ``images``: image
        paths, folders, glob patterns, ``Sample`` s, PIL images or H x W [x C] arrays of any
        size, one or a list (see :func:`defectforge.data.inputs.as_items`)."""
        self._check_fitted()
        import cv2

        from defectforge.data.inputs import as_items

        from defectforge.detect.image_score import final_scores

        items = as_items(images)
        raw, maps, shapes = self._score(items, keep_input_maps=True, return_shapes=True)
        scores = final_scores(self.image_score_, raw, self._fusion)
        out_maps = []
        for m, (H, W) in zip(maps, shapes):
            out_maps.append(m if m.shape == (H, W) else cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR))
        thr = self.threshold_ if self.threshold_ is not None else float("inf")
        pthr = self.pixel_threshold_ if self.pixel_threshold_ is not None else float("inf")
        pred = Prediction(
            pred_score=scores.astype(np.float64),
            anomaly_map=out_maps,
            pred_label=scores >= thr,
            pred_mask=[m >= pthr for m in out_maps],
        )
        pred.inputs, pred.pixel_threshold = items, self.pixel_threshold_  # for pred[i].plot()
        return pred

    def _score(self, items: list[Any], keep_input_maps: bool = True, return_shapes: bool = False):
        """Raw image scores (:func:`~defectforge.detect.image_score.raw_scores`, name ->
        array) and maps at the model input size for ``items``."""
        from defectforge.detect.image_score import raw_scores
        from defectforge.progress import progress_task
        from defectforge.bank.features import rgb_batches
        from defectforge.detect.scoring import patch_maps_to_input

        c = self.config
        if getattr(self, "_nn_key", None) != (c.nn_backend, c.device):
            self._make_indexes()  # nn_backend or device changed since fit / load (set_params)
        h, w = self.grid_
        per = h * w
        rows_out: list[dict[str, float]] = []
        maps: list[np.ndarray] = []
        shapes: list[tuple[int, int]] = []
        def featured():  # (rgbs, rows) per batch; the next batch is read meanwhile
            for rgbs in rgb_batches(items, c.batch_size):
                yield rgbs, self._rows(rgbs)

        with progress_task("scoring", len(items), self.progress) as bar:
            for rgbs, rows in self._batches(featured(), len(items)):
                shapes.extend(r.shape[:2] for r in rgbs)
                dn, inn = self._nn_normal.search(rows, 1)
                dn, inn = dn[:, 0].reshape(len(rgbs), per), inn[:, 0].reshape(len(rgbs), per)
                if self._nn_defect is not None:
                    dp, ip = self._nn_defect.search(rows, 1)
                    dp, ip = dp[:, 0].reshape(len(rgbs), per), ip[:, 0].reshape(len(rgbs), per)
                    patch = dn / (dp + c.eps)
                else:
                    dp = ip = None
                    patch = dn
                full = patch_maps_to_input(patch.reshape(len(rgbs), h, w), self.input_size_, c.map_upsample, c.sigma)
                ws = self._image_scores(rows.reshape(len(rgbs), per, -1), dn, inn, dp, ip)
                for b in range(len(rgbs)):
                    rows_out.append(raw_scores(full[b], patch[b], dn[b], ws[b], c.topk_fraction))
                    if keep_input_maps:
                        maps.append(full[b])
                bar.advance(len(rgbs))
        names = ("weighted", "max", "patch_max", "topk", "nn_max")
        scores = {n: np.array([r[n] for r in rows_out], np.float64) for n in names}
        if return_shapes:
            return scores, maps, shapes
        return scores, maps

    def _batches(self, featured: Iterable[Any], n_items: int) -> Iterable[Any]:
        """How batches are made: where it pays (:meth:`_overlap_pays`) and for more than one
        batch, the backbone of the next batch runs beside the search of this one, each with half
        the threads (:mod:`~defectforge.detect._overlap`); otherwise one after the other."""
        from defectforge.detect._overlap import overlapped

        n_batches = -(-n_items // self.config.batch_size)
        if n_batches > 1 and self._overlap_pays():
            return overlapped(featured, n_batches)
        return featured

    def _overlap_pays(self) -> bool:
        """Whether the two halves of scoring cost about the same, so that running them side by
        side on half the threads each beats running them one after the other on all: measured
        on a 2-thread CPU with the screened search (:data:`OVERLAP_ROWS`), the only setting
        where it is used; a function of the model and the thread count, never of timings."""
        import torch

        nn = getattr(self, "_nn_normal", None)
        return (str(self.config.device).startswith("cpu") and torch.get_num_threads() == 2
                and nn is not None and nn.backend == "screened" and OVERLAP_ROWS[0] <= len(nn) <= OVERLAP_ROWS[1])

    def _neighbours(self, bank: str, m_idx: np.ndarray) -> list[list[int]] | None:
        """For each bank row ``m_idx[i]``, the bank rows nearest it (itself left out), from one
        search for the whole batch; None when the weighting needs none."""
        c = self.config
        nn = self._nn_normal if bank == "normal" else self._nn_defect
        data = self.bank_normal_ if bank == "normal" else self.bank_defect_
        if c.weighting == "none" or c.num_neighbors <= 1 or len(nn) < 2:
            return None
        _, nb = nn.search(data[m_idx], min(c.num_neighbors, len(nn)))
        return [[int(j) for j in row if int(j) != int(m)] for row, m in zip(nb, m_idx)]

    def _bank_weight(self, bank: str, p_star: np.ndarray, s_star: float, m_idx: int, nb: list[int] | None) -> float:
        """Weight of one bank's max-min distance (see :mod:`~defectforge.detect.scoring`);
        ``nb``: the bank rows nearest row ``m_idx`` (:meth:`_neighbours`)."""
        from defectforge.detect.scoring import exdd_ratio, patchcore_weight

        c = self.config
        data = self.bank_normal_ if bank == "normal" else self.bank_defect_
        if nb is None:
            return 1.0
        if c.weighting == "patchcore":
            support = data[[m_idx] + nb[: c.num_neighbors - 1]]
            return patchcore_weight(p_star, support)
        others = data[nb[: c.num_neighbors - 1]]
        r = exdd_ratio(p_star, s_star, others, tau=math.sqrt(data.shape[1]))
        return 1.0 - r if bank == "normal" else r

    def _image_scores(self, rows3: np.ndarray, dn: np.ndarray, inn: np.ndarray,
                      dp: np.ndarray | None, ip: np.ndarray | None) -> list[float]:
        """The bank-weighted max-min score of every image of a batch (``rows3``: its patch rows,
        ``(images, patches, D)``; ``dn``/``inn`` and ``dp``/``ip``: nearest distances and rows in
        the normal and defect banks, ``(images, patches)``)."""
        c = self.config
        b = np.arange(len(rows3))
        j = np.argmax(dn, axis=1)
        mn = inn[b, j]
        nb_n = self._neighbours("normal", mn)
        s_neg = [float(dn[i, j[i]]) * self._bank_weight("normal", rows3[i, j[i]], float(dn[i, j[i]]), int(mn[i]),
                                                        None if nb_n is None else nb_n[i]) for i in b]
        if dp is None:
            return s_neg
        jp = np.argmax(dp, axis=1)
        mp = ip[b, jp]
        nb_p = self._neighbours("defect", mp)
        s_pos = [float(dp[i, jp[i]]) * self._bank_weight("defect", rows3[i, jp[i]], float(dp[i, jp[i]]), int(mp[i]),
                                                         None if nb_p is None else nb_p[i]) for i in b]
        return [sn / (sp + c.eps) for sn, sp in zip(s_neg, s_pos)]
