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


class PatchScoreMixin:
    """``predict`` and the patch / image scoring of :class:`~defectforge.detect.exdd.ExDD`."""

    def _make_indexes(self) -> None:
        from defectforge.bank.knn import NearestNeighbors

        c = self.config
        self._nn_key = (c.nn_backend, c.device)
        self._nn_normal = NearestNeighbors(self.bank_normal_, c.nn_backend, device=c.device)
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
        from defectforge.bank.features import to_rgb
        from defectforge.detect.scoring import patch_maps_to_input

        c = self.config
        if getattr(self, "_nn_key", None) != (c.nn_backend, c.device):
            self._make_indexes()  # nn_backend or device changed since fit / load (set_params)
        h, w = self.grid_
        per = h * w
        rows_out: list[dict[str, float]] = []
        maps: list[np.ndarray] = []
        shapes: list[tuple[int, int]] = []
        with progress_task("scoring", len(items), self.progress) as bar:
            for s in range(0, len(items), c.batch_size):
                rgbs = [to_rgb(it) for it in items[s:s + c.batch_size]]
                shapes.extend(r.shape[:2] for r in rgbs)
                rows = self._rows(rgbs)
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
                rows3 = rows.reshape(len(rgbs), per, -1)
                for b in range(len(rgbs)):
                    ws = self._image_score(rows3[b], dn[b], inn[b], None if dp is None else dp[b],
                                          None if ip is None else ip[b])
                    rows_out.append(raw_scores(full[b], patch[b], dn[b], ws, c.topk_fraction))
                    if keep_input_maps:
                        maps.append(full[b])
                bar.advance(len(rgbs))
        names = ("weighted", "max", "patch_max", "topk", "nn_max")
        scores = {n: np.array([r[n] for r in rows_out], np.float64) for n in names}
        if return_shapes:
            return scores, maps, shapes
        return scores, maps

    def _bank_weight(self, bank: str, p_star: np.ndarray, s_star: float, m_idx: int) -> float:
        """Weight of one bank's max-min distance (see :mod:`~defectforge.detect.scoring`)."""
        from defectforge.detect.scoring import exdd_ratio, patchcore_weight

        c = self.config
        nn = self._nn_normal if bank == "normal" else self._nn_defect
        data = self.bank_normal_ if bank == "normal" else self.bank_defect_
        if c.weighting == "none" or c.num_neighbors <= 1 or len(nn) < 2:
            return 1.0
        _, nb = nn.search(data[m_idx][None], min(c.num_neighbors, len(nn)))
        nb = [int(j) for j in nb[0] if int(j) != m_idx]
        if c.weighting == "patchcore":
            support = data[[m_idx] + nb[: c.num_neighbors - 1]]
            return patchcore_weight(p_star, support)
        others = data[nb[: c.num_neighbors - 1]]
        r = exdd_ratio(p_star, s_star, others, tau=math.sqrt(data.shape[1]))
        return 1.0 - r if bank == "normal" else r

    def _image_score(self, rows: np.ndarray, dn: np.ndarray, inn: np.ndarray,
                     dp: np.ndarray | None, ip: np.ndarray | None) -> float:
        c = self.config
        j = int(np.argmax(dn))
        s_neg = float(dn[j]) * self._bank_weight("normal", rows[j], float(dn[j]), int(inn[j]))
        if dp is None:
            return s_neg
        jp = int(np.argmax(dp))
        s_pos = float(dp[jp]) * self._bank_weight("defect", rows[jp], float(dp[jp]), int(ip[jp]))
        return s_neg / (s_pos + c.eps)
