"""``defectforge recipe search``: splits from TRAIN only (the test split is never read), the
real-only baseline as a candidate, pruning, resume from the SQLite study, and a best recipe
that ``synth --config`` runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna", reason="the recipe search needs optuna (pip install defectforge[search])")

from defectforge.data.image_io import write_image, write_mask  # noqa: E402
from defectforge.errors import ConfigError, InputError  # noqa: E402
from defectforge.recipe import search as rs  # noqa: E402
from defectforge.recipe.search import SearchSettings, carve_splits, search_recipes  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
H, W = 96, 128


def _img(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = 110 + 40 * (xx / W) + 20 * np.sin(yy / 3.0 + seed)
    return np.clip(base[..., None] + rng.normal(0, 4, (H, W, 3)), 0, 255).astype(np.uint8)


def make_data(root: Path, n_good: int = 10, n_def: int = 6) -> Path:
    rows = ["file,split,label,mask"]
    for split, ng, nd in (("train", n_good, n_def), ("test", 3, 3)):
        for i in range(ng):
            write_image(root / "images" / f"{split}_good{i}.png", _img(i + (0 if split == "train" else 500)))
            rows.append(f"images/{split}_good{i}.png,{split},good,")
        for i in range(nd):
            img = _img(100 + i + (0 if split == "train" else 500))
            m = np.zeros((H, W), bool)
            yy, xx = np.mgrid[0:H, 0:W]
            j = i % 6
            m[((yy - 30 - 5 * j) / 5.0) ** 2 + ((xx - 20 - 15 * j) / 7.0) ** 2 <= 1] = True
            img[m] = (img[m] * 0.5).astype(np.uint8)
            write_image(root / "images" / f"{split}_pit{i}.png", img)
            write_mask(root / "masks" / f"{split}_pit{i}.png", m)
            rows.append(f"images/{split}_pit{i}.png,{split},pitting,masks/{split}_pit{i}.png")
    (root / "split.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path / "data")


@pytest.fixture
def reads(monkeypatch):
    """Every image/mask file read during the test (through the toolkit's readers)."""
    import defectforge.data.image_io as io
    import defectforge.data.sample as sample

    seen: list[str] = []
    for mod in (io, sample):
        for name in ("read_image", "read_mask"):
            orig = getattr(io, name)

            def spy(path, *a, _orig=orig, **k):
                seen.append(str(path))
                return _orig(path, *a, **k)

            monkeypatch.setattr(mod, name, spy)
    return seen


def _tiny(**kw) -> SearchSettings:
    base = dict(detector="exdd", trials=3, seed=0, generators=("fitted", "transplant"), image_size=64,
                detector_params={"random_init": True, "val_fraction": 0.2}, min_gain=0.0)
    base.update(kw)
    return SearchSettings(**base)


def test_splits_are_train_only_disjoint_and_seeded(data):
    from defectforge.data.formats import load_dataset

    ds = load_dataset(data)
    a, b = carve_splits(ds, _tiny()), carve_splits(ds, _tiny())
    c = carve_splits(ds, _tiny(seed=1))
    names = lambda xs: {s.name for s in xs}  # noqa: E731
    assert names(a.guide) == names(b.guide) and names(a.guide) != names(c.guide) or names(a.val) != names(c.val)
    assert not names(a.guide) & names(a.val_defects) and not names(a.fit_good) & names(a.val_good)
    assert all(s.split == "train" for s in a.fit_good + a.guide + a.val)
    assert len(a.guide) == 3 and len(a.val_defects) == 3 and len(a.val_good) == 2 and len(a.fit_good) == 8
    assert len(carve_splits(ds, _tiny(max_good=4)).fit_good) == 4


def test_search_never_reads_test_writes_a_runnable_recipe_and_resumes(data, tmp_path, reads):
    out = tmp_path / "search"
    logs: list[str] = []
    for f in list((data / "images").glob("test_*")) + list((data / "masks").glob("test_*")):
        f.write_bytes(b"not an image: reading the test split must never happen")
    s = search_recipes(data, out, _tiny(), log=logs.append)
    assert not [p for p in reads if Path(p).name.startswith("test_")], "the test split must never be read"
    assert any(Path(p).name.startswith("train_pit") for p in reads)  # (the spy does see the reads)
    assert s["trials"]["complete"] + s["trials"]["pruned"] == 3
    assert s["baseline"]["score"] == pytest.approx(0.5 * (s["baseline"]["image_auroc"] + s["baseline"]["aupro"]))
    for f in ("study.db", "report.html", "commands.sh", "search.json", "trials.csv", "best_recipe.yaml"):
        assert (out / f).is_file(), f
    assert json.loads((out / "search.json").read_text())["verdict"] == s["verdict"]
    html = (out / "report.html").read_text()
    assert "Trial history" in html and "real only" in html and "Search-time reductions" in html
    assert s["search_time_reductions"]["image_size"] == 64
    # the best recipe is a synth config that `synth --config` runs, from all TRAIN defects
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.synth2d.config import load_config

    cfg = load_config(out / "best_recipe.yaml")
    assert cfg.recipe["detector"] == "exdd" and cfg.recipe["trial"] == s["best_trial"]
    assert cfg.source.split == "train" and {g.name for g in cfg.generators} <= {"fitted", "transplant"}
    r = CliRunner().invoke(app, ["synth", "--config", str(out / "best_recipe.yaml"), "--out", str(tmp_path / "syn"),
                                 "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "syn" / "images").glob("*.png"))) >= 1
    # resume: more trials extend the same study; the baseline is not recomputed
    calls = []
    orig = rs.evaluate_candidate
    rs_eval = lambda sp, synth, st, work, report=None: calls.append(len(synth)) or orig(sp, synth, st, work, report)  # noqa: E731
    import unittest.mock as um

    with um.patch.object(rs, "evaluate_candidate", rs_eval):
        s2 = search_recipes(data, out, _tiny(trials=4), log=logs.append)
    assert len(calls) == 1 and calls[0] > 0
    assert s2["trials"]["complete"] + s2["trials"]["pruned"] == 4
    assert any("resuming: 3 trial(s)" in m for m in logs)
    study = optuna.load_study(study_name=rs.STUDY, storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[3].params != study.trials[0].params  # a resumed sampler does not redraw old points
    with pytest.raises(ConfigError):  # other settings in the same folder are refused
        search_recipes(data, out, _tiny(trials=4, seed=5))


def _fake_scores(monkeypatch, baseline: float, trial_scores: list[float]):
    """The detector replaced by fixed validation scores (the synthesis still runs)."""
    it = iter(trial_scores)

    def fake(sp, synth, st, work, report=None):
        if not synth:
            return {"score": baseline}
        v = next(it)
        if report is not None:
            report(v, 0)
        return {"score": v}

    monkeypatch.setattr(rs, "evaluate_candidate", fake)


def test_baseline_wins_means_no_synthetic_data(data, tmp_path, monkeypatch):
    _fake_scores(monkeypatch, 0.9, [0.85, 0.88, 0.8])
    s = search_recipes(data, tmp_path / "s", _tiny(min_gain=0.01))
    assert not s["recommend_synthetic"] and "NO synthetic data" in s["verdict"]
    cmds = (tmp_path / "s" / "commands.sh").read_text()
    assert "synth --config" not in cmds and "--synthetic" not in cmds and "detect fit" in cmds
    assert "recommended: false" in (tmp_path / "s" / "best_recipe.yaml").read_text()


def test_a_recipe_that_helps_is_recommended_and_poor_trials_are_pruned(data, tmp_path, monkeypatch):
    _fake_scores(monkeypatch, 0.7, [0.8, 0.9, 0.1, 0.95])
    s = search_recipes(data, tmp_path / "s", _tiny(trials=4))
    assert s["recommend_synthetic"] and s["trials"]["pruned"] == 1 and s["trials"]["complete"] == 3
    assert s["best"]["score"] == 0.95 and s["gain_over_baseline"] == pytest.approx(0.25)
    import csv

    rows = list(csv.DictReader((tmp_path / "s" / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned", "complete"]
    assert rows[2]["score"] == "" and float(rows[2]["last_intermediate"]) == pytest.approx(0.1)
    cmds = (tmp_path / "s" / "commands.sh").read_text()
    assert "synth --config" in cmds and "--synthetic" in cmds


def test_bad_inputs_are_one_line_errors(data, tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli import app

    r = CliRunner().invoke(app, ["recipe", "search", str(data), "--detector", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown detector" in r.output and "fcos-lite0" in r.output
    r = CliRunner().invoke(app, ["recipe", "search", str(data), "--generators", "fitted,nope", "--out",
                                 str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown generator" in r.output
    only_good = make_data(tmp_path / "good_only", n_def=0)
    with pytest.raises(InputError, match="no defect images"):
        search_recipes(only_good, tmp_path / "y", _tiny())
    assert not (tmp_path / "x").exists()


def test_box_detector_search_trains_on_real_plus_synthetic(data, tmp_path):
    s = search_recipes(data, tmp_path / "s", _tiny(detector="fcos-lite0", trials=1, generators=("fitted",), epochs=1,
                                                   patience=1))
    assert s["trials"]["complete"] == 1 and 0.0 <= s["best"]["map50"] <= 1.0 and s["best"]["epochs_run"] == 1
    assert s["validation_metric"] == "mAP@0.5" and s["search_time_reductions"]["epochs"] == 1
    assert "train-detector" in (tmp_path / "s" / "commands.sh").read_text()
    assert not (tmp_path / "s" / "work").exists() or not any((tmp_path / "s" / "work").iterdir())


def test_folds_score_every_candidate_on_several_validation_splits(data, tmp_path, monkeypatch):
    from defectforge.data.formats import load_dataset

    ds = load_dataset(data)
    f0, f1 = carve_splits(ds, _tiny(), 0), carve_splits(ds, _tiny(), 1)
    assert {s.name for s in f0.val} != {s.name for s in f1.val}
    seen: list[tuple[frozenset, int]] = []

    def fake(sp, synth, st, work, report=None):
        seen.append((frozenset(s.name for s in sp.val), len(synth)))
        assert report is None  # with several folds the running mean is reported between folds
        return {"score": 0.5 + 0.01 * len(seen)}

    monkeypatch.setattr(rs, "evaluate_candidate", fake)
    s = search_recipes(data, tmp_path / "s", _tiny(trials=2, folds=2))
    assert len(seen) == 2 * 3  # baseline + 2 trials, each on 2 folds
    assert seen[0][0] != seen[1][0] and seen[0][1] == 0 and seen[2][1] > 0
    assert len(s["baseline"]["fold_scores"]) == 2
    assert s["baseline"]["score"] == pytest.approx(np.mean(s["baseline"]["fold_scores"]))


class _Quantiles:
    """A tiny stand-in for the C2ST's backbone: grey quantiles of the whole crop."""

    def embed(self, crops):
        return np.array([np.percentile(c.mean(-1), [10, 50, 90]) for c in crops])


@pytest.fixture
def realism_spy(monkeypatch):
    """The C2ST with the stand-in backbone; records the real and synthetic sets it was given."""
    import defectforge.filter.c2st as c2

    monkeypatch.setattr("defectforge.filter.embed.default_embedder", lambda size=128, device="cpu": _Quantiles())
    calls: list[tuple[list[str], int]] = []
    orig = c2.set_realism

    def spy(real, synthetic, seed=0, **kw):
        calls.append(([s.name for s in real], len(synthetic)))
        return orig(real, synthetic, seed=seed, **kw)

    monkeypatch.setattr(c2, "set_realism", spy)
    return calls


def test_search_reports_the_best_recipes_realism_against_validation_defects(tmp_path, monkeypatch, realism_spy):
    from defectforge.data.formats import load_dataset
    from defectforge.recipe.realism import MIN_SYNTH

    data = make_data(tmp_path / "d", n_good=10, n_def=20)
    _fake_scores(monkeypatch, 0.5, [0.6, 0.9, 0.7])
    out = tmp_path / "s"
    s = search_recipes(data, out, _tiny())
    sp = carve_splits(load_dataset(data), _tiny())
    assert len(realism_spy) == 1  # the best trial only (no limit set)
    names, n_syn = realism_spy[0]
    assert sorted(names) == sorted(x.name for x in sp.val_defects)  # the held-out defects, never guide/test
    assert not set(names) & {x.name for x in sp.guide} and all(n.startswith("train_") for n in names)
    assert n_syn >= max(MIN_SYNTH, len(sp.val_defects))
    r = s["realism"]
    assert 0.0 <= r["c2st_auc"] <= 1.0 and r["c2st_ci"][0] <= r["c2st_auc"] <= r["c2st_ci"][1]
    assert r["n_reference"] == 10 and "validation" in r["reference"]
    assert "c2st_floor_auc" in r or "5 vs 5 crops" in r["c2st_floor_reason"]  # (halves of 10 real defects)
    assert json.loads((out / "search.json").read_text())["realism"]["c2st_auc"] == r["c2st_auc"]
    assert "Realism of the best recipe" in (out / "report.html").read_text()
    assert f"C2ST AUC {r['c2st_auc']:.3f}" in (out / "best_recipe.yaml").read_text()
    # a resumed run reuses the stored number
    search_recipes(data, out, _tiny())
    assert len(realism_spy) == 1


def test_max_c2st_prunes_unrealistic_recipes_before_the_detector(tmp_path, monkeypatch, realism_spy):
    data = make_data(tmp_path / "d", n_good=10, n_def=20)
    detector_calls: list[int] = []

    def fake(sp, synth, st, work, report=None):
        detector_calls.append(len(synth))
        return {"score": 0.9 if synth else 0.5}

    monkeypatch.setattr(rs, "evaluate_candidate", fake)
    s = search_recipes(data, tmp_path / "strict", _tiny(max_c2st=0.01))
    assert detector_calls == [0]  # only the baseline ran: every recipe failed the limit first
    assert s["trials"]["pruned"] == 3 and s["best_trial"] is None and not s["recommend_synthetic"]
    assert "realism limit" in s["verdict"] and len(realism_spy) == 3
    import csv

    rows = list(csv.DictReader((tmp_path / "strict" / "trials.csv").open()))
    assert all("above --max-c2st" in r["rejected"] and float(r["c2st_auc"]) > 0.01 for r in rows)
    detector_calls.clear()
    s = search_recipes(data, tmp_path / "loose", _tiny(max_c2st=1.0))
    assert len(detector_calls) == 4 and s["recommend_synthetic"] and s["realism"]["c2st_auc"] <= 1.0
    assert len(realism_spy) == 3 + 3  # per trial; the best one's number is reused


def test_bad_max_c2st_is_a_one_line_error(data, tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli import app

    r = CliRunner().invoke(app, ["recipe", "search", str(data), "--max-c2st", "1.5", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--max-c2st" in r.output


def test_box_candidates_get_the_baselines_optimiser_steps(data, tmp_path, monkeypatch):
    """Every box candidate trains for as many optimiser steps as the real-only baseline's
    one pass (more synthetic images do not mean more steps); an explicit value is used as is."""
    import defectforge.supervised.train as tr

    seen = []
    orig = tr.train_detector

    def spy(train, out, cfg, **kw):
        seen.append((len(train), cfg.steps_per_epoch))
        return orig(train, out, cfg, **kw)

    monkeypatch.setattr(tr, "train_detector", spy)
    st = _tiny(detector="fcos-lite0", trials=2, generators=("fitted",), epochs=1, patience=1, ratio_range=(2.0, 3.0))
    search_recipes(data, tmp_path / "s", st)
    sp = carve_splits(__import__("defectforge.data", fromlist=["load_dataset"]).load_dataset(data), st)
    want = rs.baseline_steps(sp, st.batch_size)
    assert want == -(-(len(sp.guide) + min(len(sp.fit_good), len(sp.guide))) // st.batch_size)
    assert len(seen) == 3 and len({n for n, _ in seen}) > 1  # the trials train on more images ...
    assert {s for _, s in seen} == {want}  # ... for the same number of steps
    seen.clear()
    search_recipes(data, tmp_path / "t", _tiny(detector="fcos-lite0", trials=1, generators=("fitted",), epochs=1,
                                               patience=1, steps_per_epoch=5))
    assert {s for _, s in seen} == {5}
    with pytest.raises(ConfigError, match="steps-per-epoch"):
        _tiny(steps_per_epoch=0).check()


def test_ema_reaches_every_box_candidate_and_the_commands(data, tmp_path, monkeypatch):
    """``--ema`` trains every candidate (baseline included) with the weight average, is part of
    the search's key, is written into the commands that apply the result, and is refused where
    it cannot apply."""
    import defectforge.supervised.train as tr
    from typer.testing import CliRunner

    from defectforge.cli import app

    seen = []
    orig = tr.train_detector

    def spy(train, out, cfg, **kw):
        seen.append(cfg.ema)
        return orig(train, out, cfg, **kw)

    monkeypatch.setattr(tr, "train_detector", spy)
    params = {"random_init": True, "val_fraction": 0.2, "ema": 0.9}
    st = _tiny(detector="fcos-lite0", trials=1, generators=("fitted",), epochs=1, patience=1, detector_params=params)
    assert st.key() != _tiny(detector="fcos-lite0", trials=1, generators=("fitted",), epochs=1, patience=1).key()
    search_recipes(data, tmp_path / "s", st)
    assert seen and set(seen) == {0.9}
    assert "train-detector" in (tmp_path / "s" / "commands.sh").read_text()
    assert "--ema 0.9" in (tmp_path / "s" / "commands.sh").read_text()

    captured = []

    def fake_search(data, out, st, **kw):
        captured.append(st)
        raise SystemExit(0)

    import defectforge.recipe.search as rsearch

    orig_search = rsearch.search_recipes
    monkeypatch.setattr(rsearch, "search_recipes", fake_search)
    r = CliRunner().invoke(app, ["recipe", "search", str(data), "--detector", "fcos-lite0", "--ema", "0.999",
                                 "--out", str(tmp_path / "c")])
    assert r.exit_code == 0 and captured[-1].detector_params == {"ema": 0.999}
    r = CliRunner().invoke(app, ["recipe", "search", str(data), "--detector", "fcos-lite0", "--out", str(tmp_path / "c")])
    assert captured[-1].detector_params == {}
    for args, msg in ((["--ema", "0.999"], "exdd is fitted"), (["--detector", "fcos-lite0", "--ema", "1.5"], "decay")):
        monkeypatch.setattr(rsearch, "search_recipes", orig_search)
        r = CliRunner().invoke(app, ["recipe", "search", str(data), *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and msg in r.output and not (tmp_path / "x").exists()
