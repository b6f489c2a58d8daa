"""Run folders written before the run-folder helper (state at the top level) still resume."""

from __future__ import annotations

import shutil

import pytest

from defectforge.data import Dataset
from defectforge.datasets import load_sample
from defectforge.experiments import ExperimentSettings, run_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_an_older_experiment_folder_resumes_from_its_top_level_journal(tmp_path, monkeypatch):
    ds = load_sample()
    tr, te = list(ds.filter(split="train")), list(ds.filter(split="test"))
    small = Dataset([s for s in tr if not s.is_defect][:6] + [s for s in tr if s.is_defect][:4]
                    + [s for s in te if not s.is_defect][:2] + [s for s in te if s.is_defect][:2],
                    root=ds.root, format=ds.format)
    st = ExperimentSettings(seeds=(0,), exdd_image_size=32, n_synth=(0,))
    out = tmp_path / "e"
    first = run_experiment("exdd-augmentation", small, out, st)
    shutil.move(out / ".run" / "journal.jsonl", out / "journal.jsonl")  # the old layout
    shutil.rmtree(out / ".run")
    monkeypatch.setattr("defectforge.experiments.runner._exdd", lambda *a, **k: pytest.fail("recomputed"))
    again = run_experiment("exdd-augmentation", small, out, st)
    assert again["markdown"] == first["markdown"]
    assert (out / ".run" / "journal.jsonl").is_file()


def _digest(root):
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "report.html"}


def test_an_older_synth_folder_resumes(tmp_path):
    import json

    from defectforge.synth2d import parse_config, synthesize

    src = load_sample().root
    cfg = parse_config({"source": {"path": str(src), "roi": "border"}, "generators": [{"name": "pitting"}],
                        "n": 2, "seed": 1})
    out = tmp_path / "s"
    synthesize(cfg, out, workers=1, gallery=0)
    want = _digest(out)
    (out / ".synth" / "run.json").unlink()  # the old layout: .synth/config.json with the fingerprint
    (out / ".synth" / "config.json").write_text(json.dumps({"fingerprint": cfg.fingerprint()}))
    run = synthesize(cfg, out, workers=1, gallery=0)
    assert run.resumed == 2 and run.written == 0
    assert _digest(out) == want


def test_an_older_synth3d_folder_resumes(tmp_path):
    from defectforge.synth3d.instructions import InstructionSet
    from defectforge.synth3d.pipeline import run_synthesis

    inst = InstructionSet.model_validate({"defects": [{"type": "dent"}]})
    out = tmp_path / "c"
    run_synthesis("part:flange", inst, 2, 0, out, n_points=1500)
    want = _digest(out)
    shutil.rmtree(out / ".run")  # the old layout: run.json and meta/ only
    res = run_synthesis("part:flange", inst, 2, 0, out, n_points=1500)
    assert res["generated"] == 0 and res["skipped"] == 2
    assert {k: v for k, v in _digest(out).items() if not k.startswith(".run/")} == \
        {k: v for k, v in want.items() if not k.startswith(".run/")}
