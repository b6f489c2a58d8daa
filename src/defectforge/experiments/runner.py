"""Experiment runner: conditions x seeds, journaled, summarised as mean ± std.

``run_experiment(name, data, out, settings)`` writes into ``out``:

- ``.run/journal.jsonl`` — one line per finished (condition, seed) run; a rerun skips them
  (resume). The settings and data (``settings.json``) must match to resume (else
  :class:`ConfigError`, or pass ``overwrite=True``); the folder rules (lock, no overlap
  with the data, only the run's own outputs cleared) are :mod:`defectforge.runfolder`'s.
- ``results_runs.csv`` (per seed), ``results.csv`` and ``results.md`` (mean ± std, sample
  standard deviation with ddof = 1 over seeds), ``report.html`` with bar plots
  (:mod:`~defectforge.experiments.results`).

Splits (never test): the real TRAIN split is divided per seed into train-part and
validation (stratified, ``val_fraction``; whole groups where the samples have
``meta["group"]``, ``val_split``). Detectors early-stop on that validation part;
synthetic images are made from train-part good images with statistics of train-part
defects; the filter compares with train-part defects. ExDD uses all TRAIN good images
(it carves its own validation split for thresholds; AUROCs are threshold-free).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from defectforge.data.sample import Dataset, Sample
from defectforge.errors import ConfigError, InputError
from defectforge.experiments.results import PRIMARY, summarize, write_results  # noqa: F401 (re-exported)
from defectforge.registry import Registry
from defectforge.runfolder import RunFolder

OUTPUTS = ("settings.json", "journal.jsonl", "results_runs.csv", "results.csv", "results.md", "report.html", "assets",
           "runs")

#: experiment name -> builder of its conditions ``ctx -> [(label, run(seed) -> metrics)]``
EXPERIMENTS: Registry[Callable[..., Any]] = Registry("experiment", builtin=(__name__,))


@dataclass
class ExperimentSettings:
    """Every knob of the experiments (recorded in ``settings.json``)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    generator: str = "pitting"
    generator_params: dict[str, Any] = field(default_factory=dict)  # the generator's parameters (e.g. blend)
    # ExDD
    exdd_image_size: int = 256
    n_synth: tuple[int, ...] = (0, 50, 100, 150)
    # supervised detector
    arch: str = "fasterrcnn-lite0"
    det_image_size: int = 256
    epochs: int = 12
    batch_size: int = 4
    lr: float = 0.01
    patience: int = 4
    val_fraction: float = 0.2
    val_split: str = "auto"  # whole groups held out where the samples have them (defectforge.data.splits)
    neg_per_pos: float | None = 1.0
    steps_per_epoch: int | None = None  # equal optimiser steps for every condition (TrainConfig)
    ema: float | None = None  # weight averaging of the box detectors (TrainConfig.ema)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    synth_only_n: int | None = None  # default: as many as the real train-part defects
    few_real: tuple[int, ...] = (10, 25, 63)
    few_real_synth: int = 50
    # filtering ablation
    filter_n: int = 50
    filter_pool_factor: float = 2.0
    filter_rules: tuple[str, ...] = ("fidelity>=p10",)
    filter_rank_by: str = "realism_distance"
    filter_detectors: tuple[str, ...] = ("exdd", "supervised")
    # evaluation
    max_test: int | None = None  # deterministic subsample of TEST for speed (None = all)
    only: tuple[str, ...] = ()  # run only these conditions (by name; empty = all)

    def check(self) -> None:
        if not self.seeds:
            raise ConfigError("at least one seed is needed")
        if any(n < 0 for n in self.n_synth) or not all(0 < r < math.inf for r in self.ratios):
            raise ConfigError(f"n_synth must be >= 0 and ratios finite and > 0, got ratios {list(self.ratios)}")
        if not 1.0 <= self.filter_pool_factor < math.inf:
            raise ConfigError("filter_pool_factor must be >= 1 (the pool must hold at least filter_n samples)")
        bad = [d for d in self.filter_detectors if d not in ("exdd", "supervised")]
        if bad:
            raise ConfigError(f"filter_detectors must be exdd and/or supervised, got {bad}")
        self.train_config(0).check()
        if not isinstance(self.generator_params, dict):
            raise ConfigError(f"generator_params must be a mapping of parameter names to values, "
                              f"got {type(self.generator_params).__name__}")
        from defectforge.synth2d.base import get_generator

        get_generator(self.generator, **self.generator_params)  # unknown name or bad parameters: ConfigError

    def train_config(self, seed: int):
        from defectforge.supervised.train import TrainConfig

        return TrainConfig(arch=self.arch, image_size=self.det_image_size, epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, patience=self.patience,
                           val_fraction=self.val_fraction, val_split=self.val_split, neg_per_pos=self.neg_per_pos, seed=seed,
                           steps_per_epoch=self.steps_per_epoch, ema=self.ema)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=list))


class _Ctx:
    """Per-seed data: splits and cached synthetic pools."""

    def __init__(self, ds: Dataset, st: ExperimentSettings, out: Path, device: str = "cpu"):
        self.st, self.out, self.device = st, out, device
        self.train = list(ds.filter(split="train"))
        test = list(ds.filter(split="test"))
        if not self.train:
            raise InputError(ds.root, "dataset has no train split")
        if not test:
            raise InputError(ds.root, "dataset has no test split")
        if st.max_test is not None and st.max_test < len(test):
            from defectforge.experiments.data import subsample

            good = [s for s in test if not s.is_defect]
            bad = [s for s in test if s.is_defect]
            k = st.max_test // 2
            test = subsample(good, st.max_test - min(k, len(bad)), 12345) + subsample(bad, k, 12345)
        self.test = test
        from defectforge.supervised.train import gt_boxes

        self.classes = sorted({b.label for s in self.train for b in gt_boxes(s)})
        if not self.classes:
            raise InputError(ds.root, "the train split has no defect samples")
        if not any(s.is_defect for s in self.test):
            raise InputError(ds.root, "the test split has no defect samples")
        self._pools: dict[tuple[str, int], list[Sample]] = {}
        self._embedder = None

    def split(self, seed: int):
        from defectforge.supervised.train import split_train_val

        return split_train_val(self.train, self.st.val_fraction, seed, self.st.val_split)

    def pool(self, kind: str, seed: int, n: int, defects: list[Sample] | None = None) -> list[Sample]:
        """Synthetic pool: ``kind='all'`` from all TRAIN, ``'part'`` from the train part only.
        ``defects``: the real defects the generator may fit or copy (default: those of
        ``kind``'s images), e.g. only a few-real regime's ``k`` defects; ``kind`` names the
        pool for the cache, so give each set of defects its own."""
        from defectforge.experiments.data import make_synthetic

        key = (kind, seed)
        have = self._pools.get(key, [])
        if len(have) < n:
            src = self.train if kind == "all" else self.split(seed)[0]
            goods = [s for s in src if not s.is_defect]
            defs = [s for s in src if s.is_defect] if defects is None else list(defects)
            have = make_synthetic(goods, defs, n, seed, self.st.generator, self.classes, self.st.generator_params)
            self._pools[key] = have
        return have[:n]

    def embedder(self):
        if self._embedder is None:
            from defectforge.filter.embed import default_embedder

            self._embedder = default_embedder()
        return self._embedder


def _exdd(ctx: _Ctx, seed: int, synth: list[Sample]) -> dict[str, Any]:
    from defectforge.detect import ExDD, evaluate_detector

    goods = [s for s in ctx.train if not s.is_defect]
    defects = [s for s in ctx.train if s.is_defect] + list(synth)
    model = ExDD(image_size=ctx.st.exdd_image_size, seed=seed, defect_val_split=ctx.st.val_split,
                 device=ctx.device).fit(goods, defects=defects)
    r = evaluate_detector(model, ctx.test)
    m = r["metrics"]
    return {"i_auroc": float(m["image_auroc"]), "p_auroc": float(m["pixel_auroc"]),
            "n_bank_defect_images": len(defects)}


def _det(ctx: _Ctx, seed: int, key: str, train: list[Sample], val: list[Sample]) -> dict[str, Any]:
    from defectforge.supervised.train import evaluate_boxes, train_detector

    run_dir = ctx.out / "runs" / key.replace("/", "_").replace(" ", "_")
    det = train_detector(train, run_dir, ctx.st.train_config(seed), val=val, classes=ctx.classes, device=ctx.device)
    m = evaluate_boxes(det, ctx.test)
    hist = det.info_.get("history", [])
    res = {"map50": float(m["map50"]), "map50_95": float(m["map50_95"]), "epochs_run": len(hist),
           "n_train_defect": sum(s.is_defect for s in train), "n_train_good": sum(not s.is_defect for s in train),
           "best_val_map50": float(det.info_.get("best_val", [float("nan")])[0])}
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints only matter while the run is unfinished
    return res


@EXPERIMENTS.register("exdd-augmentation")
def _exdd_augmentation(ctx: _Ctx) -> list[tuple[str, Callable[[int], dict[str, Any]]]]:
    st = ctx.st
    conds: list[tuple[str, Callable[[int], dict[str, Any]]]] = []
    for n in st.n_synth:
        conds.append((f"exdd +{n} synthetic", lambda seed, n=n: _exdd(ctx, seed, ctx.pool("all", seed, n))))
    return conds


@EXPERIMENTS.register("synsur-regimes")
def _synsur_regimes(ctx: _Ctx) -> list[tuple[str, Callable[[int], dict[str, Any]]]]:
    st = ctx.st
    conds: list[tuple[str, Callable[[int], dict[str, Any]]]] = []

    def real_only(seed: int) -> dict[str, Any]:
        tr, va = ctx.split(seed)
        return _det(ctx, seed, f"real_s{seed}", tr, va)

    def synth_only(seed: int) -> dict[str, Any]:
        tr, va = ctx.split(seed)
        n = st.synth_only_n or sum(s.is_defect for s in tr)
        goods = [s for s in tr if not s.is_defect]
        return _det(ctx, seed, f"synth_s{seed}", goods + ctx.pool("part", seed, n), va)

    def mixed(seed: int, r: float) -> dict[str, Any]:
        tr, va = ctx.split(seed)
        n = max(1, int(round(r * sum(s.is_defect for s in tr))))
        return _det(ctx, seed, f"mix{r:g}_s{seed}", tr + ctx.pool("part", seed, n), va)

    def few(seed: int, k: int, n_syn: int) -> dict[str, Any]:
        from defectforge.experiments.data import subsample

        tr, va = ctx.split(seed)
        defs = subsample([s for s in tr if s.is_defect], k, seed)
        goods = [s for s in tr if not s.is_defect]
        # the synthetic defects learn from (or copy) only these k real defects
        syn = ctx.pool(f"few{k}", seed, n_syn, defects=defs) if n_syn else []
        return _det(ctx, seed, f"few{k}_{n_syn}_s{seed}", goods + defs + syn, va)

    conds.append(("real only", real_only))
    conds.append(("synthetic only", synth_only))
    for r in st.ratios:
        conds.append((f"real + synthetic x{r:g}", lambda seed, r=r: mixed(seed, r)))
    n_avail = min(sum(s.is_defect for s in ctx.split(seed)[0]) for seed in st.seeds)
    for k in st.few_real:
        if k > n_avail:  # more than the train part holds: that is the "real only" row
            warnings.warn(f"few-real regime {k} skipped: the train part has only {n_avail} real defects",
                          UserWarning, stacklevel=2)
            continue
        conds.append((f"{k} real", lambda seed, k=k: few(seed, k, 0)))
        conds.append((f"{k} real + {st.few_real_synth} synthetic", lambda seed, k=k: few(seed, k, st.few_real_synth)))
    return conds


@EXPERIMENTS.register("filtering-ablation")
def _filtering_ablation(ctx: _Ctx) -> list[tuple[str, Callable[[int], dict[str, Any]]]]:
    st = ctx.st
    conds: list[tuple[str, Callable[[int], dict[str, Any]]]] = []
    cache: dict[int, tuple[list[Sample], list[Sample], dict[str, Any]]] = {}

    def sets(seed: int):
        if seed not in cache:
            from defectforge.experiments.data import subsample
            from defectforge.filter.quality import set_quality
            from defectforge.filter.scores import score_samples
            from defectforge.filter.select import SelectionPolicy, select

            tr, _va = ctx.split(seed)
            real_defs = [s for s in tr if s.is_defect]
            pool = ctx.pool("part", seed, int(math.ceil(st.filter_n * st.filter_pool_factor)))
            unf = subsample(pool, st.filter_n, seed)
            used = {str(s.meta.get("source", "")) for s in pool}
            sources = {g.name: g.rgb() for g in tr if not g.is_defect and g.name in used}
            # fidelity compares with the source image, as `filter select` does
            rows = score_samples(pool, real_defs, embedder=ctx.embedder(), sources=sources)
            keep, _ = select(rows, SelectionPolicy(rules=list(st.filter_rules), rank_by=st.filter_rank_by,
                                                   top_k=st.filter_n))
            fil = [s for s, k in zip(pool, keep) if k]
            q = {}
            for tag, ss in (("unfiltered", unf), ("filtered", fil)):
                try:
                    qq = set_quality(real_defs, ss, embedder=ctx.embedder(), kid_subsets=50, seed=seed)
                    q[tag] = {k: qq[k] for k in ("kid_mean", "precision", "recall", "density", "coverage")}
                except (InputError, ConfigError) as exc:
                    q[tag] = {"error": str(exc)}
            cache[seed] = (unf, fil, q)
        return cache[seed]

    def run(seed: int, which: str, detector: str) -> dict[str, Any]:
        unf, fil, q = sets(seed)
        syn = unf if which == "unfiltered" else fil
        if detector == "exdd":
            res = _exdd(ctx, seed, syn)
        else:
            tr, va = ctx.split(seed)
            res = _det(ctx, seed, f"{which}_{detector}_s{seed}", tr + syn, va)
        res.update({f"set_{k}": v for k, v in q[which].items() if k != "error"})
        res["n_synthetic"] = len(syn)
        return res

    for d in st.filter_detectors:
        label = "ExDD" if d == "exdd" else st.arch
        for which in ("unfiltered", "filtered"):
            conds.append((f"{label}: {which}", lambda seed, w=which, d=d: run(seed, w, d)))
    return conds


def run_experiment(name: str, data: str | Path | Dataset, out: str | Path, settings: ExperimentSettings | None = None,
                   overwrite: bool = False, progress: Callable[[str, int, int], None] | None = None,
                   engine: Any = None, device: str = "cpu") -> dict[str, Any]:
    """Run (or resume) experiment ``name``; returns ``{"runs", "summary", "markdown", "out"}``.
    ``device`` (auto, cpu, cuda[:N]) is where ExDD and the box detectors run; it is not a
    setting of the run (a run resumes on another device).
    ``engine`` (:mod:`defectforge.engine`) runs the (condition, seed) pairs as items
    (default: one after another in this process); the results do not depend on the order."""

    EXPERIMENTS.get(name)  # an unknown name raises ConfigError listing the experiments
    st = settings or ExperimentSettings()
    st.check()
    if isinstance(data, Dataset):
        ds = data
    else:
        from defectforge.data import load_dataset

        ds = load_dataset(Path(data))
    out = Path(out)
    settings = asdict(st)
    if settings["ema"] is None:
        del settings["ema"]  # folders from before the option resume
    sj = {"experiment": name, "settings": _jsonable(settings),
          "data": str(ds.root) if ds.root is not None else "memory", "counts": ds.counts()}
    inputs = [ds.root] if ds.root is not None else []
    legacy = _legacy_journal(out, sj)  # a folder written before run folders kept their state
    with RunFolder.open(out, job="experiment", config=sj, inputs=inputs, outputs=OUTPUTS, overwrite=overwrite,
                        adopt=legacy is not None) as rf:
        rf.write_artifact("settings.json", json.dumps(sj, indent=2))
        if legacy and not rf.journal.records():
            for r in legacy.records():
                rf.journal.append(r)
        done = {f"{r['condition']}|{r['seed']}": r for r in rf.journal.records() if "condition" in r}
        ctx = _Ctx(ds, st, out, device)
        conds = EXPERIMENTS.get(name)(ctx)
        if st.only:
            names = [c for c, _ in conds]
            unknown = [c for c in st.only if c not in names]
            if unknown:
                raise ConfigError(f"unknown condition(s) {unknown} for {name} (available: {', '.join(names)})")
            conds = [(c, fn) for c, fn in conds if c in st.only]
        total = len(conds) * len(st.seeds)
        pairs = [(cond, seed) for seed in st.seeds for cond, _ in conds]
        runs: list[dict[str, Any]] = [done[f"{c}|{s}"] for c, s in pairs if f"{c}|{s}" in done]
        todo = [(c, s) for c, s in pairs if f"{c}|{s}" not in done]
        if progress is not None and runs:
            progress(runs[-1]["condition"], len(runs), total)
        from defectforge.engine.local import LocalEngine

        runner = engine if engine is not None else LocalEngine(1)
        for (cond, _), rec in runner.map(ConditionTask(name, ds, st, out, dict(conds), device), todo):
            rf.journal.append(rec)
            runs.append(rec)
            if progress is not None:
                progress(cond, len(runs), total)
        return write_results(out, name, sj, conds, runs)


class ConditionTask:
    """One (condition, seed) run of experiment ``name``; returns its journal record. A worker
    of another process builds the conditions once (:meth:`setup`: splits, cached pools)."""

    def __init__(self, name: str, ds: Dataset, st: ExperimentSettings, out: Path,
                 conds: dict[str, Callable[[int], dict[str, Any]]] | None = None, device: str = "cpu"):
        self.name, self.ds, self.st, self.out, self.device = name, ds, st, out, device
        self._conds = conds

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_conds"] = None  # closures over this process's context: rebuilt in the worker
        return state

    def setup(self) -> None:
        if self._conds is None:
            self._conds = dict(EXPERIMENTS.get(self.name)(_Ctx(self.ds, self.st, self.out, self.device)))

    def __call__(self, item: tuple[str, int]) -> dict[str, Any]:
        cond, seed = item
        t0 = time.perf_counter()
        res = self._conds[cond](seed)  # type: ignore[index]
        return {"condition": cond, "seed": seed, **res, "seconds": round(time.perf_counter() - t0, 1)}


def _legacy_journal(out: Path, sj: dict[str, Any]):
    """The top-level journal of an older run folder of these very settings (else None)."""
    from defectforge.runfolder import STATE, Journal

    if (out / STATE / "run.json").is_file() or not (out / "settings.json").is_file():
        return None
    try:
        same = json.loads((out / "settings.json").read_text()) == sj
    except (OSError, ValueError):
        return None
    return Journal(out / "journal.jsonl") if same else None
