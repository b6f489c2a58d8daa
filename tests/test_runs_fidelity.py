"""The filtering experiment scores ``fidelity`` against the source image, as ``filter
select`` does on a synth folder (it used the no-source fallback formula before)."""

from __future__ import annotations

import pytest

from defectforge.data import Dataset
from defectforge.datasets import load_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small() -> Dataset:
    ds = load_sample()
    tr = list(ds.filter(split="train"))
    te = list(ds.filter(split="test"))
    keep = ([s for s in tr if not s.is_defect][:8] + [s for s in tr if s.is_defect][:6]
            + [s for s in te if not s.is_defect][:2] + [s for s in te if s.is_defect][:2])
    return Dataset(keep, root=ds.root, format=ds.format)


def test_in_memory_synthetic_samples_name_their_source_file(small):
    from defectforge.filter.scores import score_samples
    from defectforge.synth2d import generate_samples

    goods = [s for s in small if s.split == "train" and not s.is_defect]
    reals = [s for s in small if s.split == "train" and s.is_defect]
    syn = generate_samples(goods, "pitting", 3, seed=0, real_defects=reals)
    assert syn and all(str(s.meta.get("source_path", "")).endswith((".jpg", ".png")) for s in syn)
    rows = score_samples(syn, reals)
    assert all(r["has_source"] for r in rows)
    assert all(r["change_out"] == r["change_out"] for r in rows)  # the source formula (not NaN)


def test_filtering_ablation_scores_fidelity_with_the_source(small, tmp_path, monkeypatch):
    import defectforge.filter.scores as scores
    from defectforge.experiments import ExperimentSettings, run_experiment

    seen: list[bool] = []
    real = scores.score_samples

    def spy(*a, **kw):
        rows = real(*a, **kw)
        seen.extend(r["has_source"] for r in rows)
        return rows

    monkeypatch.setattr(scores, "score_samples", spy)
    # in-memory goods (no files): the experiment must hand the source images over itself
    mem = Dataset([s.__class__(label=s.label, split=s.split, image_array=s.rgb(), mask_array=s.mask,
                               meta={"name": s.name}) for s in small], root=None, format="memory")
    st = ExperimentSettings(seeds=(0,), exdd_image_size=32, val_fraction=0.34, filter_n=2, filter_pool_factor=2.0,
                            filter_detectors=("exdd",), only=("ExDD: filtered",))
    run_experiment("filtering-ablation", mem, tmp_path / "f", st)
    assert seen and all(seen)
