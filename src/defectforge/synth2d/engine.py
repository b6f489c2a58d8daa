"""Making one synthetic sample: sources, generators, the :class:`Engine` and the in-memory API.

Sample ``i`` is made from its own seed, ``SeedSequence(seed, spawn_key=(i,))``: a good image
and a generator are drawn, the generator runs, :func:`derive_label` derives the label from
the pixel change, and rejected attempts (nothing visible changed, change leaks) are retried
with the same RNG. The result is a :class:`~defectforge.synth2d.record.SynthRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from defectforge.data.sample import GOOD, Dataset, Sample
from defectforge.errors import ConfigError, DefectforgeError, InputError
from defectforge.synth2d import masks as mk
from defectforge.synth2d.base import Generator, RealDefect, generator_class
from defectforge.synth2d.config import LabelConfig, SynthConfig
from defectforge.synth2d.labels import derive_label
from defectforge.synth2d.record import SynthRecord


# -- sources ---------------------------------------------------------------------------------
def seed_for(seed: int, index: int) -> int:
    """The per-sample seed: a 63-bit integer derived from (global seed, sample index)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(index),))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def real_defects_from(samples: Sequence[Sample], context: int = 12) -> tuple[list[RealDefect], mk.MaskStats | None]:
    """Cut every connected defect component (with ``context`` px around) from labelled
    samples, and fit mask statistics on their full masks. Each defect also carries a
    descriptor of the host surface around it (:func:`.fit.host_descriptors`, defect
    in-painted away) and its surround window (:func:`.placement.cut_surround`, small). Empty
    or wrong-size masks are errors naming the file."""
    from defectforge.synth2d.fit import descriptor_at, host_descriptors
    from defectforge.synth2d.placement import cut_surround

    reals: list[RealDefect] = []
    full_masks = []
    for s in samples:
        img = s.rgb()
        m = mk.check_real_mask(s.mask, img.shape, s.mask_path or s.path or s.name)
        full_masks.append(m)
        H, W = m.shape
        maps = host_descriptors(img, hole=m)
        for comp, (y0, x0, y1, x1) in mk.components(m):
            ya, xa, yb, xb = max(0, y0 - context), max(0, x0 - context), min(H, y1 + context), min(W, x1 + context)
            cm = np.zeros((yb - ya, xb - xa), bool)
            cm[y0 - ya:y1 - ya, x0 - xa:x1 - xa] = comp
            cyx = ((y0 + y1) / 2 / H, (x0 + x1) / 2 / W)
            reals.append(RealDefect(np.ascontiguousarray(img[ya:yb, xa:xb]), cm, s.name, cyx, (H, W),
                                    descriptor_at(maps, cyx), cut_surround(img, m, comp, (y0, x0, y1, x1))))
    stats = mk.MaskStats.fit(full_masks) if full_masks else None
    return reals, stats


def _build_generators(cfg: SynthConfig, reals_by_type: dict[str, list[RealDefect]],
                      stats_by_type: dict[str, mk.MaskStats | None]) -> list[tuple[Generator, float]]:
    out = []
    all_reals = [r for v in reals_by_type.values() for r in v]
    for spec in cfg.generators:
        cls = generator_class(spec.name)
        params = dict(spec.params)
        gen = cls(**params)
        if "defect_type" not in params and gen.needs_real and len(reals_by_type) == 1:
            gen.config = gen.config.model_copy(update={"defect_type": next(iter(reals_by_type))})
        t = gen.defect_type
        reals = reals_by_type.get(t) or all_reals
        if reals:
            gen.fit(reals)
            st = stats_by_type.get(t)
            if st is not None:
                gen.stats = st
        elif gen.needs_real:
            raise ConfigError(f"generator {spec.name!r} needs real defects with masks, but the source has none")
        out.append((gen, spec.weight))
    return out


@dataclass
class _Good:
    name: str
    path: str | None
    array: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        """The image as RGB uint8 (decoded from ``path`` when it has no array)."""
        if self.array is not None:
            return self.array
        from defectforge.data.image_io import as_rgb8, read_image

        return as_rgb8(read_image(self.path))  # type: ignore[arg-type]


class Engine:
    """Makes sample ``i`` from its seed: picks a good image and a generator, generates,
    derives the label, retries rejected attempts. Pickled once into each worker."""

    def __init__(self, goods: list[_Good], generators: list[tuple[Generator, float]],
                 counts: list[tuple[str, int]] | None, seed: int, roi: str | np.ndarray, roi_margin: int,
                 label: LabelConfig, max_attempts: int, png_compression: int = 3,
                 hosts: Sequence[int] | None = None):
        if not goods:
            raise InputError(None, "no good images to put defects on")
        self.goods = goods
        self.generators = generators
        self.counts = counts
        self.seed = seed
        self.roi = roi
        self.roi_margin = roi_margin
        self.label = label
        self.max_attempts = max_attempts
        self.png_compression = png_compression
        self.hosts = None if hosts is None else [int(k) for k in hosts]
        """Indices of the good images a sample may be put on (``source.hosts``); None = all."""
        if self.hosts is not None and (not self.hosts or min(self.hosts) < 0 or max(self.hosts) >= len(goods)):
            raise ConfigError("hosts: indices must name good images")
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.by_type: dict[str, list[tuple[Generator, float]]] = {}
        for g, w in generators:
            self.by_type.setdefault(g.defect_type, []).append((g, w))
        if counts is not None:
            for t, _ in counts:
                if t not in self.by_type:
                    raise ConfigError(f"count given for defect type {t!r} but no generator makes it "
                                      f"(generator types: {', '.join(sorted(self.by_type))})")

    def total(self) -> int:
        return sum(n for _, n in self.counts) if self.counts else 0

    def type_of(self, index: int) -> str | None:
        if not self.counts:
            return None
        k = index
        for t, n in self.counts:
            if k < n:
                return t
            k -= n
        raise IndexError(index)

    def _image(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        if k in self._cache:
            return self._cache[k]
        g = self.goods[k]
        img = g.rgb()
        if isinstance(self.roi, np.ndarray):
            if self.roi.shape != img.shape[:2]:
                raise InputError(g.path or g.name, f"image is {img.shape[1]}x{img.shape[0]} but the ROI mask is "
                                                   f"{self.roi.shape[1]}x{self.roi.shape[0]}")
            roi = self.roi
        elif self.roi == "auto":
            roi = mk.auto_roi(img, self.roi_margin)
        elif self.roi == "border":
            roi = mk.border_roi(img.shape[:2], self.roi_margin)
        else:
            roi = None
        if len(self._cache) >= 48:
            self._cache.pop(next(iter(self._cache)))
        self._cache[k] = (img, roi)
        return img, roi

    def make(self, index: int, encode: bool = True) -> SynthRecord:
        """Sample ``index``: PNG bytes in ``png``/``mask_png`` (``encode``) or arrays in
        ``image``/``mask_array``; ``status`` ok, failed (every attempt rejected) or error."""
        sseed = seed_for(self.seed, index)
        rng = np.random.default_rng(sseed)
        t = self.type_of(index)
        pool = self.by_type[t] if t is not None else self.generators
        w = np.array([p[1] for p in pool], np.float64)
        gen = pool[int(rng.choice(len(pool), p=w / w.sum()))][0]
        if self.hosts is None:
            k = int(rng.integers(len(self.goods)))
        else:
            k = self.hosts[int(rng.integers(len(self.hosts)))]
        good = self.goods[k]
        rec = SynthRecord(index, sseed, gen.name, gen.defect_type, good.name, good.path)
        try:
            img, roi = self._image(k)
            for attempt in range(self.max_attempts):
                res = gen.generate(img, rng, roi)
                lab = derive_label(img, res.image, res.mask, label=gen.defect_type, tau_min=self.label.tau_min,
                                   min_fill=self.label.min_fill, max_leak=self.label.max_leak,
                                   merge_radius=self.label.merge_radius, min_area=self.label.min_area)
                if lab.accepted:
                    rec.status, rec.attempts, rec.params, rec.qc = "ok", attempt + 1, res.meta, lab.qc()
                    rec.boxes = [[int(b.x0), int(b.y0), int(b.x1), int(b.y1)] for b in lab.boxes]
                    rec.width, rec.height = int(img.shape[1]), int(img.shape[0])
                    if encode:
                        rec.png = _png(res.image, self.png_compression)
                        rec.mask_png = _png(lab.mask.astype(np.uint8) * 255, self.png_compression)
                    else:
                        rec.image, rec.mask_array = res.image, lab.mask
                    return rec
                rec.rejects.append(lab.reason.split(" (")[0])
            rec.status = "failed"
        except DefectforgeError as exc:
            rec.status = "error"
            if good.path is None or getattr(exc, "path", None) is not None:  # an error that names its own file
                rec.error = str(exc)  # (a generator's texture folder, a mask) keeps it, not the host image's
            else:
                rec.error = f"{good.path}: {getattr(exc, 'problem', str(exc))}"
        return rec

    def samples(self, n: int) -> list[Sample]:
        """Samples ``0 .. n-1`` in memory (:meth:`SynthRecord.to_sample`); those whose every
        attempt was rejected are skipped; an error is raised as :class:`InputError`."""
        out = []
        for i in range(n):
            rec = self.make(i, encode=False)
            if rec.status == "error":
                raise InputError(None, rec.error)
            if rec.ok:
                out.append(rec.to_sample())
        return out


def _png(arr: np.ndarray, level: int) -> bytes:
    a = arr[..., ::-1] if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a), [cv2.IMWRITE_PNG_COMPRESSION, int(level)])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# -- set-up ----------------------------------------------------------------------------------------
def _select_goods(ds: Dataset, cfg: SynthConfig) -> list[_Good]:
    src = cfg.source
    goods = [s for s in ds if s.split == src.split and s.label == GOOD]
    if isinstance(src.good, int):
        if src.good < 1:
            raise ConfigError(f"source.good must be >= 1, got {src.good}")
        goods = goods[: src.good]
    elif isinstance(src.good, list):
        want = set(src.good)
        goods = [s for s in goods if s.name in want or (s.path is not None and s.path.name in want)]
    if not goods:
        raise InputError(src.path, f"no good images in split {src.split!r} to put defects on "
                                   f"(dataset has {ds.counts()})")
    return [_Good(s.name, str(s.path) if s.path is not None else None,
                  s.rgb() if s.path is None else None) for s in goods]


def _hosts(goods: list[_Good], defects: list[Sample], cfg: SynthConfig
           ) -> tuple[list[int] | None, dict[str, Any]]:
    """``source.hosts``: None (all good images) or the indices of the kept ones."""
    if cfg.source.hosts == "all":
        return None, {"mode": "all", "kept": len(goods), "of": len(goods)}
    from defectforge.synth2d.hosts import choose_hosts

    keep, _ = choose_hosts((g.rgb() for g in goods), [s.rgb() for s in defects], cfg.source.hosts_top)
    return [int(k) for k in keep], {"mode": "similar", "top": cfg.source.hosts_top, "kept": len(keep),
                                    "of": len(goods)}


def _load_roi(cfg: SynthConfig) -> str | np.ndarray:
    r = cfg.source.roi
    if r in ("auto", "border", "none"):
        return r
    from defectforge.data.image_io import read_mask

    m = read_mask(r)
    if not m.any():
        raise InputError(r, "region-of-interest mask is empty: no place to put a defect")
    return m


def prepare(cfg: SynthConfig, dataset: Dataset | None = None) -> tuple[Engine, dict[str, Any]]:
    """Load the source, real defects and generators; returns the engine and card facts."""
    from defectforge.data.formats import load_dataset

    ds = dataset if dataset is not None else load_dataset(cfg.source.path)
    goods = _select_goods(ds, cfg)
    reals_by_type: dict[str, list[RealDefect]] = {}
    stats_by_type: dict[str, mk.MaskStats | None] = {}
    n_real = 0
    defects: list[Sample] = []
    if cfg.source.real_defects:
        defects = [s for s in ds if s.split == cfg.source.split and s.is_defect
                   and (s.mask_path is not None or s.mask_array is not None)]
        for t in sorted({s.label for s in defects}):
            group = [s for s in defects if s.label == t]
            reals, st = real_defects_from(group)
            reals_by_type[t], stats_by_type[t] = reals, st
            n_real += len(group)
    gens = _build_generators(cfg, reals_by_type, stats_by_type)
    if cfg.counts is not None:
        counts = list(cfg.counts.items())
    else:
        counts = None
    hosts, host_facts = _hosts(goods, defects, cfg)
    engine = Engine(goods, gens, counts, cfg.seed, _load_roi(cfg), cfg.source.roi_margin, cfg.label,
                    cfg.max_attempts, cfg.png_compression, hosts)
    if counts is None:
        engine.counts = None
    facts = {"hosts": host_facts, "split": cfg.source.split, "good_images": len(goods), "real_defect_images": n_real,
             "real_components": {t: len(v) for t, v in reals_by_type.items()},
             "real_mask_stats": {t: (s.summary() if s is not None else None) for t, s in stats_by_type.items()}}
    if cfg.source.split == "test":
        facts["warning"] = "sources come from the TEST split: do not evaluate on these images"
    return engine, facts


# -- in memory ---------------------------------------------------------------------------------------
def generate_samples(good_samples: Sequence[Sample] | Sequence[np.ndarray], generator: str | Generator, n: int,
                     seed: int = 0, real_defects: Sequence[Sample] | None = None, roi: str | np.ndarray = "auto",
                     roi_margin: int = 8, max_attempts: int = 10, label: LabelConfig | None = None,
                     **params: Any) -> list[Sample]:
    """Make ``n`` labelled synthetic samples in memory (``image_array``, ``mask_array``,
    ``label`` = the generator's defect type, ``meta`` as on disk: see :mod:`.record`).
    Same inputs and seed give identical arrays. Samples that fail every attempt are
    skipped (so fewer than ``n`` may come back; ``meta['index']`` tells which)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"impossible count n={n}: must be a positive integer")
    goods = []
    for k, s in enumerate(good_samples):
        if isinstance(s, Sample):  # the source file is recorded, so filters can compare with it
            goods.append(_Good(s.name, str(s.path) if s.path is not None else None, s.rgb()))
        else:
            from defectforge.data.image_io import as_rgb8

            goods.append(_Good(f"image{k}", None, as_rgb8(np.asarray(s))))
    gen = generator if isinstance(generator, Generator) else generator_class(generator)(**params)
    if real_defects:
        reals, st = real_defects_from(list(real_defects))
        gen.fit(reals)
        gen.stats = st
    elif gen.needs_real:
        raise ConfigError(f"generator {gen.name!r} needs real defects with masks (real_defects=...)")
    if isinstance(roi, np.ndarray) and not roi.any():
        raise InputError(None, "region of interest is empty: no place to put a defect")
    engine = Engine(goods, [(gen, 1.0)], None, seed, roi, roi_margin, label or LabelConfig(), max_attempts)
    return engine.samples(int(n))
