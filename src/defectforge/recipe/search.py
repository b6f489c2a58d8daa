"""Closed-loop recipe search: which generators, parameters and count help *this* detector?

``search_recipes(data, out, settings)`` reads top to bottom:

1. **Splits** (TRAIN only; the test split is never read): the real train defects are split
   (seeded) into *guide* defects, which the generators fit and which train the detector,
   and *validation* defects; the good train images into *fit* images (defects are
   synthesised on them and the detector trains on them) and *validation* images.
2. **Baseline**: the detector on real data only (fit goods + guide defects), scored on
   validation. Always a candidate.
3. **Trials** (Optuna TPE, seeded; median pruning; the study lives in ``out/study.db`` so a
   rerun resumes): a recipe is drawn (:mod:`.space`), synthesised in memory through the
   synth pipeline (:func:`~defectforge.synth2d.engine.prepare` + ``Engine.make``, exactly
   what ``synth --config`` runs) from the guide part only, the detector is trained/fitted
   on real + synthetic and scored on validation.
4. **Verdict**: the best trial is recommended only when it beats the baseline on
   validation by at least ``min_gain``; otherwise the search says so and recommends no
   synthetic data. ``best_recipe.yaml``, ``report.html``, ``commands.sh`` and
   ``search.json`` are written (:mod:`.outputs`).

Scores: ExDD = mean of image AUROC and AUPRO on validation (its intermediate value, for
pruning, is the image AUROC on half of the validation images); box detectors = the best
validation mAP@0.5 over epochs (reported each epoch, for pruning).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from defectforge.data.sample import Dataset, Sample
from defectforge.errors import ConfigError, InputError

STATE = ".search"
OUTPUTS = ("study.db", "best_recipe.yaml", "report.html", "assets", "commands.sh", "search.json", "trials.csv", "work")
STUDY = "recipe-search"


@dataclass
class SearchSettings:
    """Every knob of a search (recorded; a rerun with other values is refused, except
    ``trials``, which may grow to extend the study)."""

    detector: str = "exdd"
    trials: int = 20
    seed: int = 0
    generators: tuple[str, ...] = ("fitted", "transplant", "pitting")
    ratio_range: tuple[float, float] = (0.25, 4.0)
    defect_type: str | None = None
    val_defects: float = 0.5
    val_good: float = 0.2
    val_split: str = "auto"
    """How validation is carved: ``auto`` holds out whole groups (``meta["group"]``, e.g. one
    photographed spot) where the samples have them, so validation defects come from groups
    the guide defects do not; ``group`` or ``image`` (:mod:`defectforge.data.splits`)."""
    max_good: int | None = None
    max_val_good: int | None = None
    min_gain: float = 0.01
    folds: int = 1
    """Guide/validation splits (seeds ``seed + k``) each candidate is scored on; the score is
    their mean (more real defects are seen, less split noise; ``folds`` x the cost)."""
    image_size: int = 256
    normal_ratio: float = 0.01
    epochs: int = 8
    batch_size: int = 4
    patience: int = 3
    steps_per_epoch: int | None = None
    """Box detectors: optimiser steps per epoch for every candidate. ``None``: the real-only
    baseline's one pass (fit goods + guide defects), so a recipe never wins by taking more
    steps than the baseline."""
    detector_params: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of ``ExDD`` / ``TrainConfig`` (e.g. ``backbone``)."""
    device: str = "cpu"
    """Where the detector fits and scores (auto, cpu, cuda[:N]); run time only, not part of
    the study's key, so a search started on one device resumes on another."""
    realism: bool = True
    """Measure the best recipe's C2ST realism against the validation defects (:mod:`.realism`)."""
    max_c2st: float | None = None
    """Realism limit: a trial whose C2ST AUC (vs the validation defects) exceeds it is pruned
    before the detector runs and is never recommended."""

    def reductions(self) -> dict[str, Any]:
        """Search-time settings that differ from what the detector uses by default (stated
        in every output, because the applied detector runs at its own settings)."""
        from defectforge.detect.exdd import ExDD
        from defectforge.supervised.train import TrainConfig

        red: dict[str, Any] = {k: getattr(self, k) for k in ("max_good", "max_val_good") if getattr(self, k) is not None}
        if self.detector == "exdd":
            ref = ExDD()
            pairs = (("image_size", ref.image_size), ("normal_ratio", ref.normal_ratio))
        else:
            tc = TrainConfig()
            pairs = (("image_size", tc.image_size), ("epochs", tc.epochs), ("patience", tc.patience))
        red.update({k: getattr(self, k) for k, d in pairs if getattr(self, k) != d})
        return red

    def check(self) -> None:
        from defectforge.recipe.space import check_generators

        if self.folds < 1:
            raise ConfigError(f"--folds must be >= 1, got {self.folds}")
        if self.max_c2st is not None and not 0.0 < self.max_c2st <= 1.0:
            raise ConfigError(f"--max-c2st must be in (0, 1], got {self.max_c2st}")
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"--steps-per-epoch must be >= 1, got {self.steps_per_epoch}")
        from defectforge.data.splits import check_val_split

        check_val_split(self.val_split)
        if not (0 < self.val_defects < 1) or not (0 < self.val_good < 1):
            raise ConfigError("--val-defects and --val-good must be fractions in (0, 1)")
        for name, v in (("--min-gain", self.min_gain), ("--normal-ratio", self.normal_ratio)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
        lo, hi = self.ratio_range
        if not (0 < lo <= hi < math.inf):
            raise ConfigError(f"--ratio-range must be 0 < LO <= HI, got {lo},{hi}")
        check_generators(list(self.generators))
        if self.detector != "exdd":
            from defectforge.supervised.models import ARCHS

            if self.detector not in ARCHS:
                raise ConfigError(f"unknown detector {self.detector!r} (choose exdd or a box architecture: "
                                  f"{', '.join(ARCHS)})")
        if "ema" in self.detector_params:
            if self.detector == "exdd":
                raise ConfigError("--ema applies to box detectors (they are trained); exdd is fitted, not trained")
            from defectforge.supervised.train import TrainConfig

            TrainConfig(arch=self.detector, ema=self.detector_params["ema"]).check_values()

    def key(self) -> dict[str, Any]:
        d = json.loads(json.dumps(asdict(self), default=list))
        d.pop("val_split")  # the key holds the resolved split (``split_by``) and the validation names
        if self.detector == "exdd":  # ... but ExDD also cuts its guide defects' folds with it
            d["defect_val_split"] = self.val_split
        d.pop("trials")
        d.pop("device")
        return d


@dataclass
class Splits:
    fit_good: list[Sample]
    guide: list[Sample]
    val_good: list[Sample]
    val_defects: list[Sample]
    defect_type: str
    by: dict[str, str] = field(default_factory=lambda: {"defect": "image", "good": "image"})
    """How each stratum was split: ``group`` (whole groups held out) or ``image``."""

    @property
    def val(self) -> list[Sample]:
        return self.val_good + self.val_defects

    def counts(self) -> dict[str, int]:
        return {"fit_good": len(self.fit_good), "guide_defects": len(self.guide), "val_good": len(self.val_good),
                "val_defects": len(self.val_defects)}

    def describe(self) -> dict[str, str]:
        """How each stratum was split, in words (reports)."""
        from defectforge.data.splits import sample_group

        out = {}
        for what, val, rest in (("defect", self.val_defects, self.guide), ("good", self.val_good, self.fit_good)):
            if self.by.get(what) == "group":
                g_val = {sample_group(s) for s in val}
                g_all = g_val | {sample_group(s) for s in rest}
                out[what] = f"whole groups: {len(g_val)} of {len(g_all)} held out ({len(val)} images)"
            else:
                out[what] = f"by image ({len(val)} held out)"
        return out


def carve_splits(ds: Dataset, st: SearchSettings, fold: int = 0) -> Splits:
    """Guide/validation defects and fit/validation goods, from the TRAIN split only
    (fold ``k`` draws them with seed ``seed + k``)."""
    train = [s for s in ds if s.split == "train"]
    types = sorted({s.label for s in train if s.is_defect})
    if not types:
        raise InputError(ds.root, "the train split has no defect images: nothing to guide or validate a search")
    t = st.defect_type or (types[0] if len(types) == 1 else None)
    if t is None or t not in types:
        raise ConfigError(f"the train split has defect types {types}: pick one with --defect-type")
    defects = [s for s in train if s.label == t and (s.mask_path is not None or s.mask_array is not None)]
    goods = [s for s in train if not s.is_defect]
    if len(defects) < 2:
        raise InputError(ds.root, f"need at least 2 masked {t!r} defects in the train split (1 guides, 1 validates)")
    if len(goods) < 4:
        raise InputError(ds.root, "need at least 4 good train images (fit and validation)")
    from defectforge.data.splits import holdout, split_by

    by_d, by_g = split_by(defects, st.val_split, "defect"), split_by(goods, st.val_split, "good")
    rng = np.random.default_rng(st.seed + fold)
    nvd = int(np.clip(round(st.val_defects * len(defects)), 1, len(defects) - 1))
    nvg = int(np.clip(round(st.val_good * len(goods)), 1, len(goods) - 2))
    # (by image, these are the draws of the split before groups were read, bit for bit)
    vd, gd = holdout(defects, nvd, rng, by_d)
    vg, fg = holdout(goods, nvg, rng, by_g)
    if len(fg) < 2:
        raise InputError(ds.root, "holding out whole groups of good images leaves fewer than 2 to fit; "
                                  "use --val-split image or lower --val-good")
    val_d, guide = [defects[i] for i in vd], [defects[i] for i in gd]
    val_g, fit_g = [goods[i] for i in vg], [goods[i] for i in fg]
    if st.max_val_good is not None:
        val_g = val_g[:st.max_val_good]
    if st.max_good is not None:
        fit_g = fit_g[:st.max_good]
    return Splits(fit_g, guide, val_g, val_d, t, {"defect": by_d, "good": by_g})


# -- one candidate: synthesise, train/fit, score on validation --------------------------------------
def synthesize_recipe(recipe: dict[str, Any], sp: Splits, source: str, n: int, seed: int) -> list[Sample]:
    """``n`` samples of ``recipe`` made in memory by the synth pipeline from the fit goods
    and the guide defects only."""
    from defectforge.recipe.space import synth_config
    from defectforge.synth2d.config import parse_config
    from defectforge.synth2d.engine import prepare

    if n <= 0:
        return []
    cfg = parse_config(synth_config(recipe, source, n, seed, sp.defect_type))
    engine, _ = prepare(cfg, Dataset(sp.fit_good + sp.guide, None, "memory"))
    return engine.samples(n)


def _half(samples: Sequence[Sample]) -> list[Sample]:
    good = [s for s in samples if not s.is_defect]
    bad = [s for s in samples if s.is_defect]
    return good[: max(1, len(good) // 2)] + bad[: max(1, len(bad) // 2)]


def score_exdd(sp: Splits, synth: list[Sample], st: SearchSettings, report: Callable[[float, int], None] | None = None
               ) -> dict[str, Any]:
    from defectforge.detect import ExDD, evaluate_detector

    model = ExDD(**{"image_size": st.image_size, "normal_ratio": st.normal_ratio, "seed": st.seed,
                    "defect_val_split": st.val_split, "device": st.device, **st.detector_params})
    model.fit(sp.fit_good, defects=list(sp.guide) + list(synth))
    if report is not None:
        r1 = evaluate_detector(model, _half(sp.val), split=None, pixel_metrics=False)
        report(float(r1["metrics"]["image_auroc"]), 0)
    m = evaluate_detector(model, sp.val, split=None)["metrics"]
    i_auroc, aupro = float(m["image_auroc"]), float(m["aupro"])
    return {"score": 0.5 * (i_auroc + aupro), "image_auroc": i_auroc, "aupro": aupro,
            "pixel_auroc": float(m["pixel_auroc"])}


def baseline_steps(sp: Splits, batch_size: int, neg_per_pos: float | None = 1.0) -> int:
    """Optimiser steps of one pass over the real-only baseline's images (the guide defects
    and the fit goods sampled with them), the steps per epoch every box candidate gets by
    default."""
    from defectforge.supervised.train import one_pass_steps

    return one_pass_steps(len(sp.guide), len(sp.fit_good), batch_size, neg_per_pos)


def score_boxes(sp: Splits, synth: list[Sample], st: SearchSettings, work: Path,
                report: Callable[[float, int], None] | None = None) -> dict[str, Any]:
    from defectforge.supervised.train import TrainConfig, train_detector

    steps = st.steps_per_epoch or baseline_steps(sp, st.batch_size, st.detector_params.get("neg_per_pos", 1.0))
    cfg = TrainConfig(**{"arch": st.detector, "image_size": st.image_size, "epochs": st.epochs,
                         "batch_size": st.batch_size, "patience": st.patience, "seed": st.seed,
                         "steps_per_epoch": steps, **st.detector_params})

    def on_epoch(epoch: int, rec: dict[str, Any]) -> None:
        if report is not None:
            report(float(np.nan_to_num(rec.get("val_map50", 0.0), nan=0.0)), epoch)

    try:
        det = train_detector(sp.fit_good + sp.guide + list(synth), work, cfg, val=sp.val, classes=[sp.defect_type],
                             overwrite=True, on_epoch=on_epoch, device=st.device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = det.info_.get("best_val", [float("nan"), float("nan")])
    return {"score": float(best[0]), "map50": float(best[0]), "map50_95": float(best[1]),
            "epochs_run": len(det.info_.get("history", []))}


def _mean(results: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: float(np.mean([r[k] for r in results])) for k in results[0] if isinstance(results[0][k], (int, float))}
    if len(results) > 1:
        out["fold_scores"] = [float(r["score"]) for r in results]
    return out


def score_folds(recipe: dict[str, Any] | None, sps: list[Splits], st: SearchSettings, source: str, work: Path,
                seed: int, report: Callable[[float, int], None] | None = None) -> tuple[dict[str, Any], int]:
    """Mean validation metrics of ``recipe`` (None: real only) over the folds, and the
    number of synthetic samples per fold. With one fold the detector reports its own
    intermediate values; with several, the running mean is reported after each fold."""
    results, n = [], 0
    for k, sp in enumerate(sps):
        n = max(1, int(round(recipe["ratio"] * len(sp.guide)))) if recipe is not None else 0
        synth = synthesize_recipe(recipe, sp, source, n, seed + 7 * k) if recipe is not None else []
        results.append(evaluate_candidate(sp, synth, st, work / f"fold{k}", report if len(sps) == 1 else None))
        if report is not None and len(sps) > 1 and k < len(sps) - 1:
            report(float(np.mean([r["score"] for r in results])), k)
    shutil.rmtree(work, ignore_errors=True)
    return _mean(results), n


def evaluate_candidate(sp: Splits, synth: list[Sample], st: SearchSettings, work: Path,
                       report: Callable[[float, int], None] | None = None) -> dict[str, Any]:
    if st.detector == "exdd":
        return score_exdd(sp, synth, st, report)
    return score_boxes(sp, synth, st, work, report)


# -- the search ---------------------------------------------------------------------------------------
def search_recipes(data: str | Path | Dataset, out: str | Path, settings: SearchSettings | None = None,
                   overwrite: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a recipe search into ``out``; returns the summary (also ``search.json``)."""
    import optuna

    from defectforge.recipe.outputs import write_outputs
    from defectforge.recipe.realism import best_trial, describe, passes, recipe_realism, trial_realism
    from defectforge.recipe.space import suggest
    from defectforge.runfolder import RunFolder

    st = settings or SearchSettings()
    st.check()
    say = log or (lambda _m: None)
    if isinstance(data, Dataset):
        ds = data
    else:
        from defectforge.data.formats import load_dataset

        ds = load_dataset(Path(data))
    if ds.root is None:
        raise InputError(None, "a recipe search needs a dataset on disk (the recipe names it as its source)")
    source = str(Path(ds.root).resolve())
    sps = [carve_splits(ds, st, k) for k in range(st.folds)]
    sp = sps[0]
    out = Path(out)
    key = {"settings": st.key(), "data": source, "splits": sp.counts(),
           "val_names": [[s.name for s in f.val] for f in sps]}
    if any(v == "group" for v in sp.by.values()):  # (a study made before groups were read stays resumable)
        key["split_by"] = sp.by
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    with RunFolder.open(out, job="recipe-search", config=key, inputs=[source], outputs=OUTPUTS, state=STATE,
                        overwrite=overwrite):
        storage = f"sqlite:///{(out / 'study.db').resolve()}"
        n_start = min(10, max(3, st.trials // 3))
        study = optuna.create_study(
            study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0 if st.detector == "exdd" else 1))
        _fail_stale(study)
        # seeded by (seed, trials so far): a resumed study continues deterministically and does not
        # redraw the random start-up points it already tried
        study.sampler = optuna.samplers.TPESampler(seed=st.seed + 7919 * len(study.trials), n_startup_trials=n_start)
        if "baseline" not in study.user_attrs:
            say(f"baseline (real only: {len(sp.fit_good)} good + {len(sp.guide)} guide defects) ...")
            t0 = time.perf_counter()
            base, _ = score_folds(None, sps, st, source, out / "work" / "baseline", 0)
            base["seconds"] = round(time.perf_counter() - t0, 1)
            study.set_user_attr("baseline", base)
        say(f"baseline validation score {study.user_attrs['baseline']['score']:.4f}")

        def objective(trial: Any) -> float:
            t0 = time.perf_counter()
            recipe = suggest(trial, list(st.generators), st.ratio_range)
            trial.set_user_attr("recipe", recipe)
            n_syn = max(1, int(round(recipe["ratio"] * len(sp.guide))))
            trial.set_user_attr("n_synthetic", n_syn)
            if st.max_c2st is not None:  # realism first: an unrealistic recipe costs no detector run
                real = recipe_realism(recipe, sp, source, n_syn, st.seed * 1000 + trial.number)
                trial.set_user_attr("realism", real)
                if not passes(real, st.max_c2st):
                    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
                    trial.set_user_attr("rejected", f"realism above --max-c2st {st.max_c2st}: {describe(real)}")
                    raise optuna.TrialPruned()

            def report(value: float, step: int) -> None:
                trial.report(value, step)
                if trial.should_prune():
                    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
                    raise optuna.TrialPruned()

            res, _ = score_folds(recipe, sps, st, source, out / "work" / f"trial{trial.number}",
                                 st.seed * 1000 + trial.number, report)
            trial.set_user_attr("metrics", res)
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
            return float(res["score"])

        done = sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.trials)
        todo = max(0, st.trials - done)
        if done:
            say(f"resuming: {done} trial(s) already in {out / 'study.db'}, {todo} to run")

        def after(study_: Any, trial: Any) -> None:
            v = f"{trial.value:.4f}" if trial.state.name == "COMPLETE" else trial.state.name.lower()
            say(f"trial {trial.number}: {v} ({trial.user_attrs.get('n_synthetic', '?')} synthetic, "
                f"{trial.user_attrs.get('seconds', '?')} s)" + (f"; {trial.user_attrs['rejected']}"
                                                                 if "rejected" in trial.user_attrs else ""))

        if todo:
            study.optimize(objective, n_trials=todo, callbacks=[after], gc_after_trial=True)
        best, _ = best_trial(study, st.max_c2st)
        if st.realism and best is not None and trial_realism(study, best) is None:
            say(f"realism of trial {best.number} (C2ST vs the validation defects) ...")
            real = recipe_realism(best.user_attrs["recipe"], sp, source, best.user_attrs["n_synthetic"],
                                  st.seed * 1000 + best.number)
            study.set_user_attr(f"realism_trial{best.number}", real)  # (a finished trial is read-only)
        return write_outputs(out, study, st, sp, source, ds, time.perf_counter() - t_start)


def _fail_stale(study: Any) -> None:
    """Trials left RUNNING by a killed run are marked FAIL (they are not counted; reruns redo them)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
