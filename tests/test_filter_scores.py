"""Filter: per-sample scores, selection policies, optional embedders, filter_dataset, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from defectforge.data import Dataset, Sample, load_dataset, write_dataset
from defectforge.errors import ConfigError, InputError
from defectforge.filter.embed import BackboneEmbedder, ClipScorer, Embedder, TorchEmbedder
from defectforge.filter.scores import fidelity, score_samples
from defectforge.filter.select import SelectionPolicy, parse_rule, select
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _img(rng: np.random.Generator, h: int = 64, w: int = 64) -> np.ndarray:
    base = np.linspace(90, 150, w)[None, :, None] + rng.normal(0, 4, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def _defect(img: np.ndarray, y: int, x: int, r: int, value: int) -> tuple[np.ndarray, np.ndarray]:
    out = img.copy()
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    m = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    out[m] = value
    return out, m


@pytest.fixture(scope="module")
def embedder() -> BackboneEmbedder:
    return BackboneEmbedder(size=64)


# -- fidelity ------------------------------------------------------------------------------------------
def test_unchanged_image_has_zero_fidelity_change():
    img = _img(np.random.default_rng(0))
    _, m = _defect(img, 30, 30, 6, 20)
    f = fidelity(img, m, source=img)
    assert f["change_in"] == 0.0 and f["change_out"] == 0.0 and f["fidelity"] == 0.0


def test_fidelity_sees_change_inside_and_leak_outside():
    img = _img(np.random.default_rng(1))
    out, m = _defect(img, 30, 30, 6, 20)
    clean = fidelity(out, m, source=img)
    assert clean["change_in"] > 50 and clean["change_out"] == 0.0
    leaky = out.copy()
    leaky[:5] = 255  # change outside the mask
    bad = fidelity(leaky, m, source=img)
    assert bad["change_out"] > 0 and bad["fidelity"] < clean["fidelity"]
    # without a source: visibility against the ring, change_out unknown
    vis = fidelity(out, m)
    assert vis["change_in"] > 50 and np.isnan(vis["change_out"])


# -- realism -------------------------------------------------------------------------------------------
def test_realism_distance_zero_for_a_copy_of_a_real_defect(embedder):
    rng = np.random.default_rng(2)
    reals = []
    for k in range(3):
        im, m = _defect(_img(rng), 20 + 8 * k, 30, 5 + k, 30)
        reals.append(Sample(label="pit", split="train", image_array=im, mask_array=m, meta={"name": f"r{k}"}))
    copy = reals[1].with_(meta={"name": "copy"})
    im2, m2 = _defect(_img(rng), 32, 32, 7, 240)  # bright blob: unlike the dark real pits
    other = Sample(label="pit", image_array=im2, mask_array=m2, meta={"name": "other"})
    rows = score_samples([copy, other], reals, embedder=embedder)
    assert rows[0]["realism_distance"] == pytest.approx(0.0, abs=1e-5)
    assert rows[1]["realism_distance"] > 0.05
    assert rows[0]["diversity"] == rows[1]["diversity"] > 0
    assert rows[0]["has_source"] is False


def test_synthetic_without_labels_is_rejected(embedder):
    rng = np.random.default_rng(3)
    im, m = _defect(_img(rng), 30, 30, 5, 20)
    real = [Sample(label="pit", image_array=im, mask_array=m)]
    with pytest.raises(InputError, match="no defect label"):
        score_samples([Sample(label="pit", image_array=im, mask_array=np.zeros_like(m))], real, embedder=embedder)


# -- selection -----------------------------------------------------------------------------------------
def _rows() -> list[dict]:
    vals = [(0.1, 10.0, "a"), (0.5, 2.0, "a"), (0.2, 8.0, "b"), (0.9, 9.0, "b"), (0.3, float("nan"), "a")]
    return [{"name": f"s{i}", "label": lab, "realism_distance": r, "fidelity": f, "_embedding": np.array([i, 0.0])}
            for i, (r, f, lab) in enumerate(vals)]


def test_rules_absolute_and_percentile():
    keep, why = select(_rows(), SelectionPolicy(rules=["fidelity>=5"]))
    assert keep == [True, False, True, True, True]  # NaN does not fail a rule
    assert "fidelity>=5" in why[1]
    keep, _ = select(_rows(), SelectionPolicy(rules=["realism_distance<=p50"]))
    assert keep == [True, False, True, False, True]  # median of 0.1,0.2,0.3,0.5,0.9 is 0.3


def test_top_k_quota_and_min_diversity():
    keep, why = select(_rows(), SelectionPolicy(top_k=2))
    assert keep == [True, False, True, False, False]  # two lowest realism distances
    assert all("top-2" in why[i] for i in (1, 3, 4))
    keep, _ = select(_rows(), SelectionPolicy(quotas={"a": 1, "b": 2}))
    assert keep == [True, False, True, True, False]
    keep, why = select(_rows(), SelectionPolicy(min_diversity=1.5, rank_by="realism_distance"))
    # order by realism: s0, s2, s4, s1, s3; embeddings on a line at x = index
    assert keep == [True, False, True, False, True]
    assert "too similar" in why[1]
    keep, _ = select(_rows(), SelectionPolicy(rank_by="fidelity", top_k=1))
    assert keep == [True, False, False, False, False]


def test_bad_rules_and_columns():
    with pytest.raises(ConfigError, match="cannot parse rule"):
        parse_rule("fidelity = 3")
    with pytest.raises(ConfigError, match="percentile"):
        parse_rule("fidelity>=p120")
    with pytest.raises(ConfigError, match="unknown score column"):
        select(_rows(), SelectionPolicy(rules=["clipscore>=1"]))


# -- optional embedders with tiny random models -------------------------------------------------------
class _TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class _Out:
    def __init__(self, t):
        self.pooler_output = t


def test_dreamsim_path_with_tiny_embedder(embedder):
    tiny = TorchEmbedder(_TinyCNN(), size=32)
    assert isinstance(tiny, Embedder)
    rng = np.random.default_rng(4)
    im, m = _defect(_img(rng), 30, 30, 6, 25)
    real = Sample(label="pit", image_array=im, mask_array=m)
    im2, m2 = _defect(_img(rng), 20, 40, 6, 230)
    rows = score_samples([real.with_(meta={"name": "c"}), Sample(label="pit", image_array=im2, mask_array=m2)],
                         [real], embedder=embedder, dreamsim=tiny)
    assert rows[0]["dreamsim_distance"] == pytest.approx(0.0, abs=1e-5)
    assert rows[1]["dreamsim_distance"] > rows[0]["dreamsim_distance"]


def test_clipscore_formula_with_tiny_encoders():
    img_enc = _TinyCNN()
    table = torch.randn(128, 8, generator=torch.Generator().manual_seed(1))

    def txt(prompts):  # bag of characters -> 8-d, wrapped like a transformers output
        return _Out(torch.stack([table[torch.tensor([ord(c) % 128 for c in p])].mean(0) for p in prompts]))

    sc = ClipScorer(img_enc, txt, size=32)
    rng = np.random.default_rng(5)
    crops = [_img(rng, 40, 40) for _ in range(3)]
    got = sc.score(crops, "a photo of pitting")
    with torch.no_grad():
        from defectforge.filter.embed import _to_tensor

        ei = img_enc(_to_tensor(crops, 32))
        et = txt(["a photo of pitting"]).pooler_output
        cos = torch.nn.functional.cosine_similarity(ei, et.expand_as(ei)).numpy()
    np.testing.assert_allclose(got, 2.5 * np.maximum(cos, 0), atol=1e-5)
    assert np.all((got >= 0) & (got <= 2.5))


# -- filter_dataset + CLI ------------------------------------------------------------------------------
def _sets(tmp_path, n_syn: int = 6, syn_label: str = "pit"):
    rng = np.random.default_rng(6)
    real = []
    for k in range(4):
        im, m = _defect(_img(rng), 20 + 6 * k, 25, 5, 30)
        real.append(Sample(label="pit", split="train", image_array=im, mask_array=m, meta={"name": f"real{k}"}))
    real.append(Sample(label="good", split="train", image_array=_img(rng), meta={"name": "good0"}))
    syn = []
    for k in range(n_syn):
        im, m = _defect(_img(rng), 30, 15 + 6 * k, 5, 30 + 35 * k)
        syn.append(Sample(label=syn_label, split="train", image_array=im, mask_array=m, meta={"name": f"syn{k}"}))
    rp = write_dataset(Dataset(real), tmp_path / "real", "manifest")
    sp = write_dataset(Dataset(syn), tmp_path / "syn", "manifest")
    return rp, sp


def test_filter_dataset_writes_kept_subset_scores_and_report(tmp_path, embedder):
    from defectforge.filter.run import filter_dataset

    rp, sp = _sets(tmp_path)
    before = sorted(p.read_bytes() for p in sp.rglob("*") if p.is_file())
    res = filter_dataset(sp, rp, tmp_path / "out", SelectionPolicy(top_k=3), embedder=embedder)
    assert res["n_kept"] == 3 and res["n_scored"] == 6
    kept = load_dataset(tmp_path / "out" / "kept")
    assert len(kept) == 3 and all(s.mask is not None and s.mask.any() for s in kept)
    with open(tmp_path / "out" / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kept"] for r in rows].count("True") == 3
    best3 = sorted(rows, key=lambda r: float(r["realism_distance"]))[:3]
    assert {r["name"] for r in best3} == {s.name for s in kept}
    assert "REJECTED" in (tmp_path / "out" / "report.html").read_text()
    assert sorted(p.read_bytes() for p in sp.rglob("*") if p.is_file()) == before  # input untouched


def test_filter_bad_input_classes_and_no_labels(tmp_path, embedder):
    from defectforge.filter.run import filter_dataset

    rp, sp = _sets(tmp_path, syn_label="scratch")
    with pytest.raises(InputError, match="classes differ"):
        filter_dataset(sp, rp, tmp_path / "out", embedder=embedder)
    assert not (tmp_path / "out").exists()  # nothing partial
    nolab = Dataset([Sample(label="pit", image_array=_img(np.random.default_rng(0)))])
    with pytest.raises(InputError, match="no labels"):
        filter_dataset(nolab, rp, tmp_path / "out2", embedder=embedder)
    assert not (tmp_path / "out2").exists()


def test_filter_cli(tmp_path, monkeypatch, embedder):
    from typer.testing import CliRunner

    from defectforge.filter import cli as fcli

    monkeypatch.setattr("defectforge.filter.embed.default_embedder", lambda size=128, device="cpu": embedder)
    app = area_app(fcli)
    rp, sp = _sets(tmp_path, n_syn=4)
    r = CliRunner().invoke(app, ["filter", "select", str(sp), "--real", str(rp), "-o", str(tmp_path / "o"),
                                 "--keep", "realism_distance<=p50", "--quota", "pit=1"])
    assert r.exit_code == 0, r.output
    assert len(load_dataset(tmp_path / "o" / "kept")) == 1
    r = CliRunner().invoke(app, ["filter", "select", str(sp), "--real", str(rp), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not empty" in r.output
    r = CliRunner().invoke(app, ["filter", "select", str(sp), "--real", str(rp), "-o", str(tmp_path / "p"),
                                 "--quota", "pit"])
    assert r.exit_code == 2 and "TYPE=N" in r.output
    r = CliRunner().invoke(app, ["filter", "quality", str(rp), str(sp), "--k", "2", "--subsets", "5"])
    assert r.exit_code == 0 and "kid_mean" in r.output
