"""Experiment runner: tiny settings on the bundled sample -> tables with mean ± std, resume, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from defectforge.data import Dataset, Sample
from defectforge.datasets import load_sample
from defectforge.errors import ConfigError, InputError
from defectforge.experiments import ExperimentSettings, run_experiment, summarize
from defectforge.experiments.data import check_synthetic
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small() -> Dataset:
    ds = load_sample()
    tr = list(ds.filter(split="train"))
    goods = [s for s in tr if not s.is_defect][:10]
    defs = [s for s in tr if s.is_defect][:6]
    te = list(ds.filter(split="test"))
    test = [s for s in te if not s.is_defect][:3] + [s for s in te if s.is_defect][:3]
    return Dataset(goods + defs + test, root=ds.root, format=ds.format)


def _st(**kw) -> ExperimentSettings:
    base = dict(seeds=(0, 1), exdd_image_size=32, n_synth=(0, 3), det_image_size=48, epochs=1, arch="fcos-lite0",
                ratios=(), few_real=(), val_fraction=0.34, filter_n=2)
    base.update(kw)
    return ExperimentSettings(**base)


def test_exdd_augmentation_table_and_resume(small, tmp_path, monkeypatch):
    res = run_experiment("exdd-augmentation", small, tmp_path / "e", _st())
    s = res["summary"]
    assert [r["condition"] for r in s] == ["exdd +0 synthetic", "exdd +3 synthetic"]
    for r in s:
        assert r["n_seeds"] == 2 and 0 <= r["i_auroc_mean"] <= 1 and r["i_auroc_std"] >= 0
    runs = res["runs"]
    vals = [r["i_auroc"] for r in runs if r["condition"] == "exdd +3 synthetic"]
    assert s[1]["i_auroc_mean"] == pytest.approx(np.mean(vals))
    assert s[1]["i_auroc_std"] == pytest.approx(np.std(vals, ddof=1))
    for r in runs:  # 6 real train defects, plus the synthetic ones
        assert r["n_bank_defect_images"] == (9 if r["condition"] == "exdd +3 synthetic" else 6)
    md = (tmp_path / "e" / "results.md").read_text()
    assert "±" in md and "i_auroc" in md and "exdd +3 synthetic" in md
    with open(tmp_path / "e" / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert (tmp_path / "e" / "report.html").exists()
    # resume: finished runs come from the journal, nothing is recomputed
    monkeypatch.setattr("defectforge.experiments.runner._exdd", lambda *a, **k: pytest.fail("recomputed"))
    again = run_experiment("exdd-augmentation", small, tmp_path / "e", _st(), device="auto")
    assert again["summary"] == s  # the device is not a setting of the run: it resumes
    with pytest.raises(ConfigError, match="different run"):
        run_experiment("exdd-augmentation", small, tmp_path / "e", _st(n_synth=(0, 1)))


def test_synsur_regimes_tiny(small, tmp_path):
    res = run_experiment("synsur-regimes", small, tmp_path / "s", _st(seeds=(0, 1), few_real=(2,), few_real_synth=2))
    conds = [r["condition"] for r in res["summary"]]
    assert conds == ["real only", "synthetic only", "2 real", "2 real + 2 synthetic"]
    for r in res["summary"]:
        assert r["n_seeds"] == 2 and 0 <= r["map50_mean"] <= 1 and np.isfinite(r["map50_std"])
    by = {(r["condition"], r["seed"]): r for r in res["runs"]}
    assert by[("2 real", 0)]["n_train_defect"] == 2 and by[("2 real + 2 synthetic", 0)]["n_train_defect"] == 4
    assert not (tmp_path / "s" / "runs").exists() or not any((tmp_path / "s" / "runs").iterdir())


def test_only_runs_the_named_conditions(small, tmp_path):
    res = run_experiment("exdd-augmentation", small, tmp_path / "o", _st(seeds=(0,), only=("exdd +3 synthetic",)))
    assert [r["condition"] for r in res["runs"]] == ["exdd +3 synthetic"]
    with pytest.raises(ConfigError, match="unknown condition.*available: exdd \\+0 synthetic"):
        run_experiment("exdd-augmentation", small, tmp_path / "p", _st(seeds=(0,), only=("nope",)))


def test_filtering_ablation_tiny(small, tmp_path):
    res = run_experiment("filtering-ablation", small, tmp_path / "f",
                         _st(seeds=(0,), filter_detectors=("exdd",), filter_n=2, filter_pool_factor=2.0))
    assert [r["condition"] for r in res["summary"]] == ["ExDD: unfiltered", "ExDD: filtered"]
    for r in res["runs"]:
        assert r["n_synthetic"] == 2 and 0 <= r["i_auroc"] <= 1


def test_summarize_and_bad_input(tmp_path):
    s = summarize([{"condition": "a", "seed": 0, "m": 1.0}, {"condition": "a", "seed": 1, "m": 3.0}], ("m",))
    assert s == [{"condition": "a", "n_seeds": 2, "m_mean": 2.0, "m_std": pytest.approx(np.sqrt(2.0))}]
    with pytest.raises(ConfigError, match="unknown experiment"):
        run_experiment("nope", Dataset([]), tmp_path / "x")
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="no labels"):
        check_synthetic([Sample(label="pitting", image_array=img)], ["pitting"])
    m = np.zeros((8, 8), bool)
    m[2:4, 2:4] = True
    with pytest.raises(InputError, match="classes differ"):
        check_synthetic([Sample(label="scratch", image_array=img, mask_array=m)], ["pitting"])
    only_train = Dataset([Sample(label="good", split="train", image_array=img)])
    with pytest.raises(InputError, match="no test split"):
        run_experiment("exdd-augmentation", only_train, tmp_path / "y", _st())


def test_experiment_cli_registers(tmp_path):
    from typer.testing import CliRunner

    from defectforge.experiments import cli as ecli

    app = area_app(ecli)
    r = CliRunner().invoke(app, ["experiment", "nope", "--data", str(tmp_path), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown experiment" in r.output


def test_experiment_cli_passes_settings(tmp_path, monkeypatch):
    """CLI options reach ExperimentSettings; ``--few-real 0`` means no few-real regimes."""
    from typer.testing import CliRunner

    from defectforge.experiments import cli as ecli
    from defectforge.experiments import runner

    seen = {}

    def fake_run(name, data, out, st, overwrite=False, progress=None, engine=None, device="cpu"):
        seen["name"], seen["st"], seen["device"] = name, st, device
        return {"markdown": "| x |\n"}

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    app = area_app(ecli)
    r = CliRunner().invoke(app, ["experiment", "synsur-regimes", "--data", str(tmp_path), "-o", str(tmp_path / "o"),
                                 "--arch", "retinanet-lite0", "--ratio", "1", "--few-real", "0", "--seed", "4",
                                 "--seed", "5", "--epochs", "3", "--only", "real only", "--device", "auto"])
    assert r.exit_code == 0, r.output
    # a run-time setting, not one of the experiment's settings; read the one way (auto -> cuda or cpu)
    assert seen["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    st = seen["st"]
    assert seen["name"] == "synsur-regimes" and st.arch == "retinanet-lite0" and st.ratios == (1.0,)
    assert st.few_real == () and st.seeds == (4, 5) and st.epochs == 3 and st.only == ("real only",)
    r = CliRunner().invoke(app, ["experiment", "synsur-regimes", "--data", str(tmp_path), "-o", str(tmp_path / "p"),
                                 "--few-real", "10", "--few-real", "25"])
    assert r.exit_code == 0 and seen["st"].few_real == (10, 25)


def test_few_real_synthetic_sees_only_the_few_real_defects(small, tmp_path, monkeypatch):
    """In a "k real + n synthetic" regime the generator copies / fits only those k real
    defects (not every train-part defect); generator parameters reach the generator;
    ``steps_per_epoch`` reaches the detector's config."""
    from defectforge.experiments import runner

    seen = {}

    def fake_det(ctx, seed, key, train, val):
        seen[key] = (list(train), ctx.st.train_config(seed))
        return {"map50": 0.5, "map50_95": 0.2}

    monkeypatch.setattr(runner, "_det", fake_det)
    st = _st(seeds=(0,), few_real=(2,), few_real_synth=3, generator="transplant",
             generator_params={"blend": "matched"}, steps_per_epoch=7, only=("2 real + 3 synthetic",))
    run_experiment("synsur-regimes", small, tmp_path / "f", st)
    train, cfg = seen["few2_3_s0"]
    assert cfg.steps_per_epoch == 7
    reals = [s for s in train if s.is_defect and not s.meta.get("generator")]
    syn = [s for s in train if s.meta.get("generator") == "transplant"]
    assert len(reals) == 2 and len(syn) == 3
    part_defects = {s.name for s in runner._Ctx(small, st, tmp_path).split(0)[0] if s.is_defect}
    assert len(part_defects) > 2  # the train part holds more real defects than the regime may use
    import json

    params = [json.loads(s.meta["params"]) for s in syn]
    assert {p["real_source"] for p in params} <= {r.name for r in reals}
    assert all(p["blend"] == "matched" for p in params)
    with pytest.raises(ConfigError, match="transplant"):
        _st(generator="transplant", generator_params={"blend": "nope"}).check()
    with pytest.raises(ConfigError, match="generator_params"):
        _st(generator_params=["blend"]).check()


def test_experiment_cli_generator_params_and_steps(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from defectforge.experiments import cli as ecli
    from defectforge.experiments import runner

    seen = {}
    monkeypatch.setattr(runner, "run_experiment",
                        lambda name, data, out, st, **kw: seen.update(st=st) or {"markdown": "| x |\n"})
    app = area_app(ecli)
    base = ["experiment", "synsur-regimes", "--data", str(tmp_path), "-o", str(tmp_path / "o")]
    r = CliRunner().invoke(app, base + ["--generator", "transplant", "--generator-params", '{"blend": "matched"}',
                                        "--steps-per-epoch", "50"])
    assert r.exit_code == 0, r.output
    assert seen["st"].generator_params == {"blend": "matched"} and seen["st"].steps_per_epoch == 50
    r = CliRunner().invoke(app, base + ["--generator-params", "{blend"])
    assert r.exit_code != 0 and "not valid JSON" in r.output
    r = CliRunner().invoke(app, base + ["--generator", "transplant", "--generator-params", '{"blend": "nope"}'])
    assert r.exit_code != 0 and "transplant" in r.output
