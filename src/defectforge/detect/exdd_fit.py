"""ExDD fitting: the normal and defect memory banks, the validation split and thresholds.

:class:`BankFitMixin` holds :meth:`~BankFitMixin.fit` of :class:`~defectforge.detect.exdd.ExDD`
(and so of PatchCore): the seeded validation split carved from the normal images, the
greedy k-center coresets of the normal rows and of the rows inside defect masks (rows
spooled to disk, only the projected ones kept in memory), the choice of the image score
and the image / pixel thresholds on the validation split (never test data).

The mixin relies on what :class:`~defectforge.detect.exdd.ExDD` defines (``config``,
``_validate_params``, ``_setup_size``, ``_rows``) and on the scoring side
(:mod:`~defectforge.detect.exdd_predict`: ``_make_indexes``, ``_score``).
"""

from __future__ import annotations

import os
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from defectforge.errors import ConfigError, InputError

if TYPE_CHECKING:
    from defectforge.detect.exdd import ExDD

#: projected normal rows (bytes) past which they are kept in a file mapping of bounded
#: residency (:class:`defectforge.bank.mapped.MappedRows`; same values, same choice)
MAP_ROWS_ABOVE = 1 << 30


@dataclass
class RowFilter:
    """Drops the rows of the tagged defect images that lie closer to the normal bank than
    ``floor`` (ExDD's ``synthetic_filter``: that ``quantile`` of the validation normal
    patches' distances); counts per set what it dropped and kept."""

    nn: Any
    floor: float
    quantile: float
    tags: set
    dropped: dict[str, int]
    kept: dict[str, int]

    def __call__(self, rows: np.ndarray, tag: Any) -> np.ndarray | None:
        if tag not in self.tags:
            return rows
        keep = self.nn.search(rows, 1)[0][:, 0] >= self.floor
        self.dropped[tag[0]] += int((~keep).sum())
        self.kept[tag[0]] += int(keep.sum())
        return rows[keep] if keep.any() else None

    def info(self) -> dict[str, Any]:
        return {"quantile": self.quantile, "floor": round(self.floor, 6),
                "rows_dropped": int(sum(self.dropped.values())), "rows_kept": int(sum(self.kept.values()))}


class BankFitMixin:
    """``fit`` and its internals for :class:`~defectforge.detect.exdd.ExDD`."""

    def fit(self, normal: Iterable[Any], defects: Iterable[Any] | dict[str, Iterable[Any]] | None = None) -> "ExDD":
        """Build the banks from defect-free ``normal`` images and (ExDD) the masked
        regions of ``defects`` (``Sample`` s with masks, or ``(image, mask)`` pairs), then
        choose thresholds on a validation split carved from ``normal``.

        ``defects`` may also be a dict ``{set name: items}`` (e.g. the train split's real
        defects and one or more synthetic sets); ``fit_info["defect_sets"]`` then records,
        per set, how many images it had and how many put rows in the defect bank.

        Memory: only the rows projected for the coreset choice stay in memory; the full
        rows wait in a temporary file and only the chosen ones are read back."""
        import time

        from defectforge.bank.chunked import chunk_bounds
        from defectforge.bank.coreset import coreset_size
        from defectforge.bank.features import random_projection, to_rgb
        from defectforge.detect.exdd import EmptyDefectMaskWarning
        from defectforge.detect.fitted import FITTED_KEY, image_keys

        self._validate_params()
        c = self.config
        normal = list(normal)
        if isinstance(defects, dict):
            def_sets = {str(k): list(v) for k, v in defects.items()}
        else:
            def_sets = {"defects": list(defects)} if defects is not None else {}
        fitted = image_keys([*normal, *(x for items in def_sets.values() for x in items)])  # detect eval refuses them
        if len(normal) == 0:
            raise ConfigError("fit needs at least one normal (defect-free) training image")
        rng = np.random.default_rng(c.seed)
        n_val = int(round(c.val_fraction * len(normal))) if c.val_fraction > 0 else 0
        if c.val_fraction > 0:
            n_val = max(1, n_val)
            if len(normal) - n_val < 1:
                raise ConfigError(
                    f"{len(normal)} normal image(s) cannot give both a training and a validation split; "
                    "pass more images or val_fraction=0 (then no threshold is chosen)")
        perm = rng.permutation(len(normal))
        val_items = [normal[i] for i in sorted(perm[:n_val])]
        train_items = [normal[i] for i in sorted(perm[n_val:])]

        first = to_rgb(train_items[0])
        self._setup_size(first)
        D = self.feature_dim_
        proj = None
        if c.projection_dim is not None and c.projection_dim < D:
            proj = random_projection(D, int(c.projection_dim), c.seed)

        t0 = time.perf_counter()
        self.bank_normal_, n_rows, t1, _ = self._bank_from(
            "normal", ((first if k == 0 else it, None) for k, it in enumerate(train_items)), len(train_items),
            proj, c.normal_ratio)
        t2 = time.perf_counter()

        # ---- defect bank (ExDD) or defect validation images (PatchCore)
        val_defects: list[Any] = []
        self.bank_defect_ = np.zeros((0, D), dtype=np.float32)
        set_info = []
        held: dict[str, int] = {}
        folds: list[list[tuple[str, int]]] = []
        folds_by = "image"
        fold_banks: list[np.ndarray] = []
        score_why = None
        if def_sets and c.defects_for == "bank" and val_items:
            from defectforge.detect.image_score import NEED_VALIDATION, crossfit_folds, hold_out_real_defects

            if c.image_score in NEED_VALIDATION and c.defect_val == "holdout":
                def_sets, val_defects, held, score_why = hold_out_real_defects(
                    def_sets, c.defect_val_fraction, c.seed, c.defect_val_split)
            elif c.image_score in NEED_VALIDATION:
                folds, folds_by, score_why = crossfit_folds(def_sets, c.defect_val_fraction, c.seed,
                                                            c.defect_val_split)
                held = {k: sum(1 for f in folds for n, _ in f if n == k) for k in def_sets}
        drop = None
        if def_sets and c.defects_for == "bank":
            tagged = [(it, (name, i)) for name, items in def_sets.items() for i, it in enumerate(items)]
            used: dict[str, int] = {name: 0 for name in def_sets}
            drop = self._synthetic_rows_filter(def_sets, val_items)
            self.bank_defect_, n_drows, _, fold_banks = self._bank_from(
                "defect", iter(tagged), len(tagged), proj, c.defect_ratio, used=used, folds=[set(f) for f in folds],
                drop=drop)
            if n_drows == 0:
                warnings.warn("no defect image contributed rows: the defect bank is empty (PatchCore behaviour)",
                              EmptyDefectMaskWarning, stacklevel=2)
            out = 0 if folds else 1  # held-out images are not in def_sets any more
            set_info = [{"name": k, "images": len(v) + out * held.get(k, 0), "in_bank": used[k], "use": "bank",
                         "validation": held.get(k, 0)} | ({"rows_dropped": drop.dropped[k]} if drop else {})
                        for k, v in def_sets.items()]
        elif def_sets:
            # (image, mask) pairs are scored by their image
            val_defects = [d[0] if isinstance(d, (tuple, list)) else d for items in def_sets.values() for d in items]
            set_info = [{"name": k, "images": len(v), "in_bank": 0, "use": "validation"} for k, v in def_sets.items()]
        t3 = time.perf_counter()
        from defectforge.detect.model_checks import check_finite_state

        check_finite_state(c.weights, {"bank_normal": self.bank_normal_, "bank_defect": self.bank_defect_},
                           cause="the backbone produced non-finite features (corrupt --weights?)")
        self._make_indexes(normal=drop.nn if drop else None)  # the filter's index of the same bank
        defect_raw = None
        if folds:  # every real defect image scored by a defect bank built without its fold
            val_defects, defect_raw = self._out_of_fold(def_sets, folds, fold_banks)

        # ---- thresholds on validation (never test)
        self.threshold_ = self.pixel_threshold_ = None
        n_val_def = 0
        if val_items:
            self._choose_thresholds(val_items, val_defects, score_why, defect_raw)
            n_val_def = len(val_defects)
        else:
            self._choose_image_score(None, None, "val_fraction=0: no validation split")
            warnings.warn("val_fraction=0: no validation split, so no threshold is chosen; "
                          "pred_label / pred_mask will be all False", UserWarning, stacklevel=2)
        self.fit_info_ = {
            "n_train_normal": len(train_items), "n_val_normal": len(val_items), "n_val_defect": n_val_def,
            "n_defect_images_in_bank": int(sum(x["in_bank"] for x in set_info)), "defect_sets": set_info,
            "defect_validation": ({"mode": "crossfit", "folds": len(folds), "by": folds_by} if folds else
                                  {"mode": "holdout"} if held else None),
            "n_rows_normal": int(n_rows),
            "bank_normal": int(len(self.bank_normal_)), "bank_defect": int(len(self.bank_defect_)),
            "feature_dim": D, "grid": list(self.grid_), "input_size": list(self.input_size_),
            "coreset": {**({"mode": "chunked", "chunk_images": int(c.coreset_chunk),
                            "chunks": len(chunk_bounds(len(train_items), c.coreset_chunk)) - 1}
                           if c.coreset_chunk else {"mode": "exact"}),
                        "max": int(c.coreset_max) if c.coreset_max else None,
                        "capped": coreset_size(n_rows, c.normal_ratio, c.coreset_min)
                        > coreset_size(n_rows, c.normal_ratio, c.coreset_min, c.coreset_max or None)},
            "synthetic_filter": drop.info() if drop else None,
            "seconds_features": round(t1 - t0, 3), "seconds_coreset": round(t2 - t1, 3),
            "seconds_defect_bank": round(t3 - t2, 3), "image_score": self._score_info,
            FITTED_KEY: fitted,
        }
        return self

    def _bank_from(self, which: str, items: Iterator[tuple[Any, Any]], n_items: int, proj: np.ndarray | None,
                   ratio: float, used: dict[str, int] | None = None, folds: list[set] = (),
                   drop: "RowFilter | None" = None) -> tuple[np.ndarray, int, float, list[np.ndarray]]:
        """``(bank rows, rows seen, time features ended, fold banks)`` for the normal or the
        defect bank: features batch by batch (full rows spooled to disk, projected rows
        kept), then the greedy k-center coreset on the projected rows. With ``coreset_chunk``
        (normal bank only) each chunk of images is chosen as soon as it is complete and only
        its projected rows are kept; the time those choices took is taken off the returned
        feature time (it is coreset time). ``items`` yields
        ``(item, tag)``; defect items (tag ``(set name, index)``) go through
        :meth:`_defect_rows` and ``used[set name]`` counts the ones that gave rows. For each
        set of tags in ``folds``, a bank built the same way without those items. ``drop``
        (:class:`RowFilter`) removes the normal-looking rows of the items it names first."""
        import time

        from defectforge.bank.coreset import coreset_size, greedy_kcenter
        from defectforge.bank.mapped import MappedRows
        from defectforge.bank.spool import RowSpool
        from defectforge.detect.fit_job import feature_rows
        from defectforge.progress import progress_task

        c = self.config
        D = self.feature_dim_
        sel_dim = proj.shape[1] if proj is not None else D
        sel_parts: list[np.ndarray] = []
        chunked = None
        if which == "normal" and c.coreset_chunk:  # opt-in: exact choice per chunk of images (bank.chunked)
            from defectforge.bank.chunked import ChunkedKCenter

            chunked = ChunkedKCenter(n_items, self.grid_[0] * self.grid_[1], c.coreset_chunk, ratio, c.seed,
                                     c.coreset_min, c.coreset_max or None)
        item_tags: list[Any] = []
        item_rows: list[int] = []
        with RowSpool(D) as spool, ExitStack() as stack:
            # the normal rows' count is known: fill one array (no second copy at the end); past
            # MAP_ROWS_ABOVE bytes in a file mapping of bounded residency (bank.mapped)
            sel_all, mapped = None, None
            if which == "normal" and chunked is None:
                shape = (n_items * self.grid_[0] * self.grid_[1], sel_dim)
                nbytes = 4 * shape[0] * shape[1]
                if nbytes > MAP_ROWS_ABOVE:
                    try:
                        mapped = stack.enter_context(MappedRows(*shape, dir=os.path.dirname(spool.path)))
                        sel_all = mapped.array
                    except OSError as e:  # e.g. no room in the temporary folder: in memory, as below
                        warnings.warn(f"{os.path.dirname(spool.path)}: cannot hold the projected rows "
                                      f"({nbytes / 2 ** 30:.1f} GiB) on disk ({e.strerror or e}); "
                                      "keeping them in memory", ResourceWarning, stacklevel=3)
                if sel_all is None:
                    sel_all = np.empty(shape, np.float32)
            with progress_task(f"features ({which})", n_items, self.progress) as bar:
                # batches of images -> rows, in order, in this process or on an engine (fit_job)
                for rows, n_batch, tag in feature_rows(self, which, items, c.batch_size):
                    bar.advance(n_batch)
                    if rows is not None and drop is not None:
                        rows = drop(rows, tag)
                    if rows is None:
                        continue
                    if used is not None:
                        used[tag[0]] += 1
                    item_tags.append(tag)
                    item_rows.append(len(rows))
                    if chunked is not None:
                        chunked.add(rows @ proj if proj is not None else rows)
                    elif sel_all is not None:
                        dst = sel_all[spool.n_rows:spool.n_rows + len(rows)]
                        if proj is not None:
                            np.matmul(rows, proj, out=dst)
                        else:
                            dst[:] = rows
                        if mapped is not None:
                            mapped.release()
                    else:
                        sel_parts.append(rows @ proj if proj is not None else rows)
                    spool.append(rows)
            t_feat = time.perf_counter()
            n_rows = spool.n_rows
            empty = np.zeros((0, D), np.float32)
            if chunked is not None:  # the chunks were chosen while the features ran: count that as coreset time
                return np.ascontiguousarray(spool.gather(chunked.finish())), n_rows, t_feat - chunked.seconds, []
            if n_rows == 0:
                return empty, 0, t_feat, [empty for _ in folds]
            sel = sel_all[:n_rows] if sel_all is not None else np.concatenate(sel_parts)
            del sel_parts, sel_all

            def size(n: int) -> int:  # the ratio's size, within coreset_min / coreset_max
                return coreset_size(n, ratio, c.coreset_min, c.coreset_max or None)

            fold_banks = []
            for fold in folds:  # before the full bank's choice, which may reorder sel in place
                sub = np.flatnonzero(np.repeat(np.array([t not in fold for t in item_tags], bool), item_rows))
                idx = greedy_kcenter(sel[sub], size(len(sub)), seed=c.seed)
                fold_banks.append(np.ascontiguousarray(spool.gather(np.sort(sub[idx]))) if len(sub) else empty)
            target = size(n_rows)
            with progress_task(f"coreset ({which} bank)", target, self.progress) as bar:
                choose_from = mapped if mapped is not None and mapped.shape[0] == n_rows else sel
                idx = greedy_kcenter(choose_from, target, seed=c.seed, progress=bar.update, overwrite_x=True)
            del sel, choose_from
            return np.ascontiguousarray(spool.gather(np.sort(idx))), n_rows, t_feat, fold_banks

    def _synthetic_rows_filter(self, def_sets: dict[str, list[Any]], val_items: list[Any]) -> "RowFilter | None":
        """The :class:`RowFilter` of the synthetic defect images (``synthetic_filter``): the
        floor is that quantile of the validation normal patches' distances to the normal
        bank. ``None`` without synthetic images, validation images or the option."""
        from defectforge.bank.features import rgb_batches
        from defectforge.bank.knn import NearestNeighbors
        from defectforge.detect.image_score import _real

        c = self.config
        real = set(_real(def_sets))
        tags = {(n, i) for n, items in def_sets.items() for i in range(len(items))} - real
        if c.synthetic_filter is None or not tags or not val_items or not len(self.bank_normal_):
            return None
        nn = NearestNeighbors(self.bank_normal_, c.nn_backend, device=c.device)
        d = np.concatenate([nn.search(self._rows(rgbs), 1)[0][:, 0] for rgbs in rgb_batches(val_items, c.batch_size)])
        return RowFilter(nn, float(np.quantile(d, float(c.synthetic_filter))), float(c.synthetic_filter), tags,
                         {n: 0 for n in def_sets}, {n: 0 for n in def_sets})

    def _out_of_fold(self, def_sets: dict[str, list[Any]], folds: list[list[tuple[str, int]]],
                     fold_banks: list[np.ndarray]) -> tuple[list[Any], dict[str, np.ndarray]]:
        """``(images, raw scores)`` of every fold's real defect images, each fold scored
        against the defect bank built without it (the normal bank as fitted)."""
        from defectforge.bank.knn import NearestNeighbors

        c = self.config
        final = (self.bank_defect_, self._nn_defect)
        images: list[Any] = []
        parts: list[dict[str, np.ndarray]] = []
        try:
            for fold, bank in zip(folds, fold_banks):
                self.bank_defect_ = bank
                self._nn_defect = NearestNeighbors(bank, c.nn_backend, device=c.device) if len(bank) else None
                its = [def_sets[name][i] for name, i in fold]
                its = [d[0] if isinstance(d, (tuple, list)) else d for d in its]
                parts.append(self._score(its, keep_input_maps=False)[0])
                images += its
        finally:
            self.bank_defect_, self._nn_defect = final
        return images, {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}

    def _defect_rows(self, item: Any, k: int) -> np.ndarray | None:
        """Rows of one defect image whose grid cell is at least ``mask_fraction`` defect."""
        from defectforge.data.sample import Sample
        from defectforge.bank.features import mask_to_grid, to_rgb
        from defectforge.detect.exdd import EmptyDefectMaskWarning

        if isinstance(item, Sample):
            rgb, mask, name = to_rgb(item), item.mask, item.name
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            rgb, mask, name = to_rgb(item[0]), (None if item[1] is None else np.asarray(item[1]) > 0), f"defect_{k:05d}"
        else:
            raise InputError(None, "defect images must be Samples with masks or (image, mask) pairs")
        if mask is None or not mask.any():
            warnings.warn(f"{name}: defect image has {'no' if mask is None else 'an empty'} mask; "
                          "skipped for the defect bank", EmptyDefectMaskWarning, stacklevel=3)
            return None
        if mask.shape != rgb.shape[:2]:
            raise InputError(getattr(item, "mask_path", None) or name,
                             f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}")
        rows = self._rows([rgb])
        frac = mask_to_grid(mask, self.grid_).reshape(-1)
        keep = frac >= self.config.mask_fraction
        if not keep.any():  # a defect smaller than one cell: keep its best-covered cell(s)
            keep = frac >= frac.max() - 1e-9
        return rows[keep]

    def _choose_image_score(self, raw: dict[str, np.ndarray] | None, labels: np.ndarray | None,
                            why: str | None) -> None:
        from defectforge.detect.image_score import choose

        info = choose(self.config.image_score, raw, labels, seed=self.config.seed, reason=why)
        if info["chosen"] == "fusion" and info["fusion"] is None:
            raise ConfigError("image_score='fusion' is calibrated on validation defect images, and there are none: "
                              + (why or "pass real defect images") + "; use 'auto' or another image score")
        self._score_info = info
        self.image_score_, self._fusion = info["chosen"], info["fusion"]

    def _choose_thresholds(self, val_items: list[Any], val_defects: list[Any], why: str | None = None,
                           defect_raw: dict[str, np.ndarray] | None = None) -> None:
        """Image score and thresholds from the validation images (``defect_raw``: the
        defects' raw scores when already computed out of fold)."""
        from defectforge.detect.image_score import final_scores
        from defectforge.metrics import select_threshold

        self.threshold_ = float("inf")
        self.pixel_threshold_ = float("inf")
        if defect_raw is None:
            raw, maps = self._score(val_items + val_defects, keep_input_maps=True)
        else:
            raw, maps = self._score(val_items, keep_input_maps=True)
            raw = {n: np.concatenate([v, defect_raw[n]]) for n, v in raw.items()}
        labels = np.array([False] * len(val_items) + [True] * len(val_defects))
        self._choose_image_score(raw, labels, why)
        scores = final_scores(self.image_score_, raw, self._fusion)
        method = "f1" if val_defects else "quantile"
        self.threshold_ = float(select_threshold(labels, scores, method=method, quantile=self.config.threshold_quantile))
        normal_px = np.concatenate([m.reshape(-1) for m, lab in zip(maps, labels) if not lab])
        self.pixel_threshold_ = float(np.quantile(normal_px, self.config.pixel_quantile))
