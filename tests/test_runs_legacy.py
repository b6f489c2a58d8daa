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
