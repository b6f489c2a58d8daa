"""The synthesis pipeline: sources -> generators -> label derivation -> files -> exports.

- **Determinism**: sample ``i`` is made from its own seed,
  ``SeedSequence(seed, spawn_key=(i,))``, so the bytes of every output file depend only
  on the config and the seed, never on the number of workers or on resume points.
- **Parallelism**: an engine (:mod:`defectforge.engine`: local worker processes or Ray
  actors) runs :class:`SampleTask`: the worker makes a sample and writes its PNGs
  atomically; the driver appends one line per finished sample to a journal.
- **Resume**: the journal (``.synth/journal.jsonl``) lists finished samples with file
  sizes; a rerun of the same config skips those whose files are intact. A different
  config in an existing output folder is refused unless ``overwrite``.
- **Rejections**: every output goes through :func:`derive_label`; rejected attempts
  (nothing visible changed, change leaks) are retried with the same sample's RNG and
  counted by reason.
- At the end: ``manifest.csv`` (generator, params and seed per sample), the dataset card
  and the exports (``export/mvtec``, ``export/yolo``, ``export/yolo_seg``, ``export/coco``)
  are rebuilt from the journal, so they are byte-identical however the run was split.

Sources are never taken from the ``test`` split unless asked for explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from defectforge._atomic import atomic_write_json, atomic_write_text
from defectforge.data.sample import GOOD, Dataset, Sample
from defectforge.errors import ConfigError, DefectforgeError, InputError
from defectforge.synth2d import masks as mk
from defectforge.synth2d.base import Generator, RealDefect, generator_class
from defectforge.synth2d.config import LabelConfig, SynthConfig
from defectforge.synth2d.labels import derive_label

STATE = ".synth"
JOURNAL = "journal.jsonl"
OUR_OUTPUTS = ("images", "masks", STATE, "manifest.csv", "dataset_card.md", "dataset_card.json", "export",
               "report.html", "assets")


# -- results ---------------------------------------------------------------------------------
@dataclass
class SynthRun:
    """What a run did. ``samples`` are the accepted samples (files on disk, or arrays for
    in-memory runs); ``rejected`` counts rejected attempts by reason."""

    config: SynthConfig | None
    out: Path | None
    samples: list[Sample] = field(default_factory=list)
    written: int = 0
    resumed: int = 0
    failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    exports: dict[str, str] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return int(sum(self.rejected.values()))


# -- sources ---------------------------------------------------------------------------------
def seed_for(seed: int, index: int) -> int:
    """The per-sample seed: a 63-bit integer derived from (global seed, sample index)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(index),))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def real_defects_from(samples: Sequence[Sample], context: int = 12) -> tuple[list[RealDefect], mk.MaskStats | None]:
    """Cut every connected defect component (with ``context`` px around) from labelled
    samples, and fit mask statistics on their full masks. Empty or wrong-size masks are
    errors naming the file."""
    reals: list[RealDefect] = []
    full_masks = []
    for s in samples:
        img = s.rgb()
        m = mk.check_real_mask(s.mask, img.shape, s.mask_path or s.path or s.name)
        full_masks.append(m)
        H, W = m.shape
        for comp, (y0, x0, y1, x1) in mk.components(m):
            ya, xa, yb, xb = max(0, y0 - context), max(0, x0 - context), min(H, y1 + context), min(W, x1 + context)
            cm = np.zeros((yb - ya, xb - xa), bool)
            cm[y0 - ya:y1 - ya, x0 - xa:x1 - xa] = comp
            reals.append(RealDefect(np.ascontiguousarray(img[ya:yb, xa:xb]), cm, s.name,
                                    ((y0 + y1) / 2 / H, (x0 + x1) / 2 / W), (H, W)))
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


class Engine:
    """Makes sample ``i`` from its seed: picks a good image and a generator, generates,
    derives the label, retries rejected attempts. Pickled once into each worker."""

    def __init__(self, goods: list[_Good], generators: list[tuple[Generator, float]],
                 counts: list[tuple[str, int]] | None, seed: int, roi: str | np.ndarray, roi_margin: int,
                 label: LabelConfig, max_attempts: int, png_compression: int = 3):
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
        if g.array is not None:
            img = g.array
        else:
            from defectforge.data.image_io import as_rgb8, read_image

            img = as_rgb8(read_image(g.path))  # type: ignore[arg-type]
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

    def make(self, index: int, encode: bool = True) -> dict[str, Any]:
        sseed = seed_for(self.seed, index)
        rng = np.random.default_rng(sseed)
        t = self.type_of(index)
        pool = self.by_type[t] if t is not None else self.generators
        w = np.array([p[1] for p in pool], np.float64)
        gen = pool[int(rng.choice(len(pool), p=w / w.sum()))][0]
        k = int(rng.integers(len(self.goods)))
        good = self.goods[k]
        rec: dict[str, Any] = {"index": index, "seed": sseed, "generator": gen.name, "label": gen.defect_type,
                               "source": good.name,
                               "source_path": good.path, "rejects": []}
        try:
            img, roi = self._image(k)
            for attempt in range(self.max_attempts):
                res = gen.generate(img, rng, roi)
                lab = derive_label(img, res.image, res.mask, label=gen.defect_type, tau_min=self.label.tau_min,
                                   min_fill=self.label.min_fill, max_leak=self.label.max_leak,
                                   merge_radius=self.label.merge_radius, min_area=self.label.min_area)
                if lab.accepted:
                    rec.update(attempts=attempt + 1, params=res.meta, qc=lab.qc(),
                               boxes=[[int(b.x0), int(b.y0), int(b.x1), int(b.y1)] for b in lab.boxes],
                               width=int(img.shape[1]), height=int(img.shape[0]))
                    if encode:
                        rec["png"] = _png(res.image, self.png_compression)
                        rec["mask_png"] = _png(lab.mask.astype(np.uint8) * 255, self.png_compression)
                    else:
                        rec["image"], rec["mask"] = res.image, lab.mask
                    return rec
                rec["rejects"].append(lab.reason.split(" (")[0])
            rec["failed"] = f"no accepted sample in {self.max_attempts} attempts"
        except DefectforgeError as exc:
            rec["error"] = str(exc) if good.path is None else f"{good.path}: {getattr(exc, 'problem', str(exc))}"
        return rec


def _png(arr: np.ndarray, level: int) -> bytes:
    a = arr[..., ::-1] if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a), [cv2.IMWRITE_PNG_COMPRESSION, int(level)])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# -- the per-item task (runs on any engine: local processes or Ray actors) -------------------------
class SampleTask:
    """Make sample ``i`` and write its two PNGs atomically into ``out``; returns its
    journal record (or ``{"index", "error"}``). Runs in a worker: only the record travels."""

    def __init__(self, maker: Engine, out: Path):
        self.maker = maker
        self.out = Path(out)

    def setup(self) -> None:
        pass

    def __call__(self, index: int) -> dict[str, Any]:
        rec = self.maker.make(index)
        if "error" in rec:
            return {"index": index, "error": rec["error"]}
        return _write_sample(self.out, rec)


# -- journal ---------------------------------------------------------------------------------------
def _read_journal(out: Path) -> dict[int, dict[str, Any]]:
    """Finished samples whose files are intact; a torn last line is dropped."""
    jp = out / STATE / JOURNAL
    done: dict[int, dict[str, Any]] = {}
    if not jp.is_file():
        return done
    good_lines = []
    for line in jp.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        good_lines.append(line)
        if rec.get("status") == "ok":
            ok = all((out / rec[k]).is_file() and (out / rec[k]).stat().st_size == rec[k + "_size"]
                     for k in ("file", "mask"))
            if not ok:
                continue
        done[int(rec["index"])] = rec
    if len(good_lines) != len(jp.read_text(encoding="utf-8").splitlines(keepends=True)):
        atomic_write_text(jp, "".join(good_lines))
    return done


def _append(fh, rec: dict[str, Any]) -> None:
    fh.write(json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


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
    engine = Engine(goods, gens, counts, cfg.seed, _load_roi(cfg), cfg.source.roi_margin, cfg.label,
                    cfg.max_attempts, cfg.png_compression)
    if counts is None:
        engine.counts = None
    facts = {"split": cfg.source.split, "good_images": len(goods), "real_defect_images": n_real,
             "real_components": {t: len(v) for t, v in reals_by_type.items()},
             "real_mask_stats": {t: (s.summary() if s is not None else None) for t, s in stats_by_type.items()}}
    if cfg.source.split == "test":
        facts["warning"] = "sources come from the TEST split: do not evaluate on these images"
    return engine, facts


def _total(cfg: SynthConfig) -> int:
    return int(cfg.n) if cfg.n is not None else int(sum(cfg.counts.values()))  # type: ignore[union-attr]


# -- the run ---------------------------------------------------------------------------------------
def synthesize(config: SynthConfig, out: str | Path | None = None, workers: int = 2, overwrite: bool = False,
               progress: Callable[[int, int], None] | None = None, dataset: Dataset | None = None,
               gallery: int = 12, engine: Any = None) -> SynthRun:
    """Run (or resume) a synthesis into ``out``; see the module doc for the layout.
    ``engine`` (:mod:`defectforge.engine`) runs the samples; default: ``workers`` local
    processes. Every engine writes the same bytes."""
    t0 = time.perf_counter()
    cfg = config
    if out is None:
        if not cfg.out:
            raise ConfigError("no output folder: pass out=... (CLI --out) or set 'out' in the config")
        out = cfg.out
    out = Path(out)
    if Path(cfg.source.path).exists():
        cfg = cfg.model_copy(update={"source": cfg.source.model_copy(update={"path": str(Path(cfg.source.path).resolve())})})
    if cfg.source.split == "test":
        import warnings

        warnings.warn("synth sources come from the test split: do not evaluate on these images", stacklevel=2)
    state = out / STATE
    cfg_json = cfg.model_dump(mode="json")
    fp = cfg.fingerprint()
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    clear = False
    if (state / "config.json").is_file():
        old = json.loads((state / "config.json").read_text(encoding="utf-8"))
        if old.get("fingerprint") != fp:
            if not overwrite:
                raise ConfigError(f"{out}: holds a synth run with a different config (fingerprint "
                                  f"{old.get('fingerprint')} vs {fp}); pass --overwrite or choose another --out")
            clear = True
    elif out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "output folder is not empty and holds no synth run; pass --overwrite or choose another --out")
        clear = True
    # everything that can fail on input is checked before anything is removed or written
    sampler, facts = prepare(cfg, dataset)
    if clear:
        _clear(out)
    total = _total(cfg)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state / "config.json", {"fingerprint": fp, "config": {k: v for k, v in cfg_json.items() if k != "out"}})
    done = _read_journal(out)
    todo = [i for i in range(total) if i not in done]
    run = SynthRun(cfg, out, resumed=len(done))
    if progress:
        progress(len(done), total)
    if todo:
        from defectforge.engine.local import LocalEngine

        runner = engine if engine is not None else LocalEngine(workers)
        with open(state / JOURNAL, "a", encoding="utf-8") as fh:
            for _, jrec in runner.map(SampleTask(sampler, out), todo):
                if "error" in jrec:
                    raise InputError(None, jrec["error"])
                _append(fh, jrec)
                done[jrec["index"]] = jrec
                run.written += jrec["status"] == "ok"
                if progress:
                    progress(len(done), total)
    from defectforge._atomic import remove_temp_files

    for sub in ("images", "masks"):  # what a worker killed mid-write left behind
        remove_temp_files(out / sub)
    _finish(run, out, cfg, done, total, facts, gallery)
    run.elapsed_s = time.perf_counter() - t0
    return run


def _clear(out: Path) -> None:
    for name in OUR_OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _write_sample(out: Path, rec: dict[str, Any]) -> dict[str, Any]:
    from defectforge._atomic import atomic_write_bytes

    i = rec["index"]
    j = {k: rec[k] for k in ("index", "seed", "generator", "label", "source", "source_path", "rejects")}
    if "failed" in rec:
        j["status"] = "failed"
        return j
    stem = f"{rec['label']}_{i:06d}"
    f, m = f"images/{stem}.png", f"masks/{stem}.png"
    atomic_write_bytes(out / f, rec["png"])
    atomic_write_bytes(out / m, rec["mask_png"])
    j.update(status="ok", file=f, mask=m, file_size=len(rec["png"]), mask_size=len(rec["mask_png"]),
             params=rec["params"], qc=rec["qc"], boxes=rec["boxes"], attempts=rec["attempts"],
             width=rec["width"], height=rec["height"])
    return j


def _record_sample(out: Path, j: dict[str, Any]) -> Sample:
    return Sample(label=j["label"], split="train", path=out / j["file"], mask_path=out / j["mask"], meta={
        "width": j["width"], "height": j["height"], "generator": j["generator"],
        "params": json.dumps(j["params"], sort_keys=True, separators=(",", ":")),
        "seed": j["seed"], "source": j["source"], "source_path": j.get("source_path") or "", "index": j["index"], "attempts": j["attempts"],
        "fill": j["qc"]["fill"], "leak": j["qc"]["leak"], "contrast": j["qc"]["contrast"],
        "instances": j["qc"]["instances"], "instance_boxes": json.dumps(j["boxes"], separators=(",", ":"))})


def _finish(run: SynthRun, out: Path, cfg: SynthConfig, done: dict[int, dict[str, Any]], total: int,
            facts: dict[str, Any], gallery: int) -> None:
    from defectforge.data.manifest import write_manifest

    recs = [done[i] for i in sorted(done)]
    # canonical journal (index order), so a resumed folder is byte-identical to a straight run
    atomic_write_text(out / STATE / JOURNAL,
                      "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in recs))
    samples = [_record_sample(out, j) for j in recs if j["status"] == "ok"]
    run.samples = samples
    run.failed = sum(j["status"] == "failed" for j in recs)
    rej: Counter = Counter()
    for j in recs:
        rej.update(j.get("rejects", []))
    run.rejected = dict(sorted(rej.items()))
    ds = Dataset(samples, root=out, format="manifest")
    write_manifest(ds, out / "manifest.csv")
    exp_ds = Dataset(samples, root=None, format="manifest")  # exports live inside out/: no source overlap check
    for fmt in cfg.formats:
        run.exports.update(export(exp_ds, out / "export", fmt))
    from defectforge.synth2d.card import write_card

    write_card(out, cfg, recs, total, facts, run)
    if gallery:
        from defectforge.synth2d.gallery import write_report

        write_report(out, samples[:gallery], run)


def export(ds: Dataset, root: Path, fmt: str) -> dict[str, str]:
    """Write the exports of format ``fmt`` under ``root`` (replacing older ones)."""
    if fmt == "mvtec":
        from defectforge.data.mvtec import write_mvtec

        return {"mvtec": str(write_mvtec(ds, root / "mvtec", overwrite=True))}
    if fmt == "yolo":
        from defectforge.data.yolo import write_yolo

        return {"yolo": str(write_yolo(ds, root / "yolo", mode="detect", overwrite=True)),
                "yolo_seg": str(write_yolo(ds, root / "yolo_seg", mode="segment", overwrite=True))}
    if fmt == "coco":
        from defectforge.data.coco import write_coco

        return {"coco": str(write_coco(ds, root / "coco", mode="rle", overwrite=True))}
    raise ConfigError(f"unknown export format {fmt!r} (choose from mvtec, yolo, coco)")


# -- in memory ---------------------------------------------------------------------------------------
def generate_samples(good_samples: Sequence[Sample] | Sequence[np.ndarray], generator: str | Generator, n: int,
                     seed: int = 0, real_defects: Sequence[Sample] | None = None, roi: str | np.ndarray = "auto",
                     roi_margin: int = 8, max_attempts: int = 10, label: LabelConfig | None = None,
                     **params: Any) -> list[Sample]:
    """Make ``n`` labelled synthetic samples in memory (``image_array``, ``mask_array``,
    ``label`` = the generator's defect type, ``meta`` with generator, params, seed, QC).
    Same inputs and seed give identical arrays. Samples that fail every attempt are
    skipped (so fewer than ``n`` may come back; ``meta['index']`` tells which)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"impossible count n={n}: must be a positive integer")
    goods = []
    for k, s in enumerate(good_samples):
        if isinstance(s, Sample):
            goods.append(_Good(s.name, None, s.rgb()))
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
    out = []
    for i in range(int(n)):
        rec = engine.make(i, encode=False)
        if "error" in rec:
            raise InputError(None, rec["error"])
        if "failed" in rec:
            continue
        out.append(Sample(label=rec["label"], split="train", image_array=rec["image"], mask_array=rec["mask"],
                          meta={"name": f"{rec['label']}_{i:06d}", "generator": rec["generator"],
                                "params": rec["params"], "seed": rec["seed"], "source": rec["source"], "index": i,
                                "qc": rec["qc"], "instance_boxes": rec["boxes"], "rejects": rec["rejects"]}))
    return out
