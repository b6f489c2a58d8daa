"""FID: Fréchet distance against closed forms, the local-weights Inception loader (a random
torchvision inception_v3 saved in the test), bad weight files, and ``filter quality
--inception-weights`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from defectforge.data import Dataset, Sample, write_dataset
from defectforge.errors import ConfigError, InputError
from defectforge.filter.quality import frechet_distance
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- Fréchet distance ----------------------------------------------------------------------------------
def _axis_set(mu: np.ndarray, c: np.ndarray) -> np.ndarray:
    """2d points mu +- c_i e_i: sample mean exactly mu, sample covariance (ddof=1) exactly
    diag(2 c^2 / (2d - 1))."""
    return np.concatenate([mu + np.diag(c), mu - np.diag(c)])


def _diag_closed_form(mu1, s1, mu2, s2) -> float:
    return float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum())


@pytest.mark.parametrize("method", ["auto", "sqrtm", "svd"])
def test_frechet_matches_closed_form_for_diagonal_gaussians(method):
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.1, 3.0, d)
    a, b = _axis_set(mu1, c1), _axis_set(mu2, c2)
    s1, s2 = 2 * c1 ** 2 / (2 * d - 1), 2 * c2 ** 2 / (2 * d - 1)
    np.testing.assert_allclose(np.cov(a, rowvar=False), np.diag(s1), atol=1e-12)  # the construction holds
    want = _diag_closed_form(mu1, s1, mu2, s2)
    assert frechet_distance(a, b, method=method) == pytest.approx(want, rel=1e-9)
    # a common rotation keeps the distance but makes both covariances full (non-diagonal)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    assert frechet_distance(a @ q, b @ q, method=method) == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("method", ["sqrtm", "svd"])
def test_frechet_zero_for_identical_sets_mean_shift_and_symmetric(method):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    assert frechet_distance(a, a.copy(), method=method) == pytest.approx(0.0, abs=1e-9)
    v = np.array([0.5, -1.0, 2.0, 0.0, 0.25])
    assert frechet_distance(a, a + v, method=method) == pytest.approx(float(v @ v), rel=1e-9)  # same covariance
    b = rng.normal(loc=0.3, size=(55, 5))
    ab, ba = frechet_distance(a, b, method=method), frechet_distance(b, a, method=method)
    assert ab > 0.1 and ab == pytest.approx(ba, rel=1e-9)


def test_frechet_near_singular_more_dims_than_samples_stays_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 64)), rng.normal(loc=0.2, size=(7, 64))
    exact = frechet_distance(a, b, method="svd")
    via_sqrtm = frechet_distance(a, b, method="sqrtm")  # rank-5 / rank-6 covariances in 64 dims
    assert math.isfinite(exact) and math.isfinite(via_sqrtm) and exact > 0
    assert via_sqrtm == pytest.approx(exact, rel=1e-4)
    assert frechet_distance(a, b) == exact  # auto takes the exact low-rank route here
    # more samples than dims but a duplicated column: singular covariances on the sqrtm route
    c = np.concatenate([a, a[:3]]) @ np.eye(64)[:, :10]
    c = np.concatenate([c, c[:, :1]], axis=1)
    e = rng.normal(size=(30, 11))
    e[:, -1] = e[:, 0]
    assert math.isfinite(frechet_distance(c, e, method="sqrtm"))


def test_frechet_sqrtm_retry_with_eps_and_imaginary_part(monkeypatch):
    import scipy.linalg

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 4)), rng.normal(loc=0.5, size=(30, 4))
    exact = frechet_distance(a, b, method="svd")
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def nan_first(m):  # a non-finite first root must trigger the eps retry
        calls.append(m.copy())
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(scipy.linalg, "sqrtm", nan_first)
    got = frechet_distance(a, b, method="sqrtm", eps=1e-6)
    assert len(calls) == 2 and got == pytest.approx(exact, rel=1e-5)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(4)) @ (s2 + 1e-6 * np.eye(4)))

    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1e-9j)  # rounding noise: dropped
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(exact, rel=1e-9)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 0.5j * np.eye(len(m)))
    with pytest.raises(InputError, match="large imaginary part"):
        frechet_distance(a, b, method="sqrtm")


def test_frechet_bad_input():
    with pytest.raises(InputError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="feature sizes differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(np.full((4, 3), np.nan), np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="method"):
        frechet_distance(np.eye(3), np.eye(3), method="exact")


# -- Inception loader ----------------------------------------------------------------------------------
def _random_inception_state(num_classes: int = 1000, aux: bool = True) -> dict:
    """A torchvision inception_v3 with seeded He-scaled random convs (the default init
    shrinks the pool features to ~1e-8), as its state dict."""
    from torchvision.models import inception_v3

    m = inception_v3(weights=None, aux_logits=aux, init_weights=False, num_classes=num_classes)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * math.sqrt(2.0 / fan))
    return m.state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    p = tmp_path_factory.mktemp("incep") / "inception_v3_google-random.pth"
    torch.save(_random_inception_state(), p)
    return p


def _crops(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        h, w = 30 + 7 * k, 44 - 3 * k
        base = np.linspace(60, 190, w)[None, :, None] + rng.normal(0, 12, (h, w, 3))
        out.append(np.clip(base, 0, 255).astype(np.uint8))
    return out


def test_inception_loads_features_2048_deterministic(weights):
    from defectforge.filter.embed import Embedder
    from defectforge.filter.inception import inception_embedder

    emb = inception_embedder(weights, batch_size=2)
    assert isinstance(emb, Embedder)
    crops = _crops(0, 3)
    f = emb.embed(crops)
    assert f.shape == (3, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.abs(f[0] - f[1]).max() > 1e-4  # different crops, different features
    np.testing.assert_array_equal(emb.embed(crops), f)
    np.testing.assert_array_equal(inception_embedder(weights, batch_size=2).embed(crops), f)  # fresh load
    assert emb.embed([]).shape == (0, 2048)


def test_inception_accepts_checkpoint_dict_module_prefix_and_fid_layout(weights, tmp_path):
    from defectforge.filter.inception import inception_embedder

    crops = _crops(1, 1)
    ref = inception_embedder(weights).embed(crops)
    sd = torch.load(weights, weights_only=True)
    ck = tmp_path / "ck.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, ck)
    np.testing.assert_array_equal(inception_embedder(ck).embed(crops), ref)
    # a TF-FID-like layout: 1008-class fc, no aux head, no BN num_batches_tracked (as in the 2017 file)
    fid_like = {k: v for k, v in sd.items()
                if not k.startswith(("AuxLogits.", "fc.")) and not k.endswith("num_batches_tracked")}
    fid_like["fc.weight"], fid_like["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    p = tmp_path / "pt_inception-like.pth"
    torch.save(fid_like, p)
    np.testing.assert_array_equal(inception_embedder(p).embed(crops), ref)


def test_inception_bad_files_give_one_line_errors(weights, tmp_path):
    from defectforge.filter.inception import inception_embedder

    def err(path) -> str:
        with pytest.raises(InputError) as ei:
            inception_embedder(path)
        msg = str(ei.value)
        assert "\n" not in msg and str(path) in msg
        return msg

    assert "not found" in err(tmp_path / "nope.pth")
    assert "not a folder" in err(tmp_path)
    (tmp_path / "text.pth").write_text("these are not weights\n")
    assert "not a readable torch weights file" in err(tmp_path / "text.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    assert "not a state dict" in err(tmp_path / "list.pth")
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), tmp_path / "other.pth")
    msg = err(tmp_path / "other.pth")
    assert "do not fit" in msg and "missing keys" in msg and "Conv2d_1a_3x3.conv.weight" in msg
    assert "unexpected keys" in msg and "weight" in msg
    sd = torch.load(weights, weights_only=True)
    sd["Mixed_7c.branch1x1.conv.weight"] = torch.zeros(3, 3, 1, 1)
    del sd["Mixed_5b.branch_pool.bn.running_var"]
    torch.save(sd, tmp_path / "bent.pth")
    msg = err(tmp_path / "bent.pth")
    assert "Mixed_5b.branch_pool.bn.running_var" in msg and "wrong shape" in msg and "Mixed_7c.branch1x1" in msg


# -- set_quality + CLI ---------------------------------------------------------------------------------
def _sets(tmp_path):
    rng = np.random.default_rng(7)

    def pit(label: str, split: str, k: int, value: int) -> Sample:
        img = np.clip(np.linspace(90, 150, 64)[None, :, None] + rng.normal(0, 4, (48, 64, 3)), 0, 255).astype(np.uint8)
        m = np.zeros((48, 64), bool)
        m[14 + 3 * k:24 + 3 * k, 20 + 5 * k:29 + 5 * k] = True
        img[m] = value
        return Sample(label=label, split=split, image_array=img, mask_array=m, meta={"name": f"{label}{split}{k}"})

    real = [pit("pit", "train", k, 25) for k in range(3)] + [pit("pit", "test", 0, 25)]
    syn = [pit("pit", "train", k, 60 + 50 * k) for k in range(3)]
    return (write_dataset(Dataset(real), tmp_path / "real", "manifest"),
            write_dataset(Dataset(syn), tmp_path / "syn", "manifest"))


@pytest.fixture(scope="module")
def small_embedder():
    from defectforge.filter.embed import BackboneEmbedder

    return BackboneEmbedder(size=64)


def test_filter_quality_cli_with_inception_weights(tmp_path, weights, monkeypatch, small_embedder):
    from typer.testing import CliRunner

    from defectforge.data import load_dataset
    from defectforge.filter import cli as fcli
    from defectforge.filter.inception import inception_embedder
    from defectforge.filter.quality import kid
    from defectforge.filter.run import check_sets
    from defectforge.filter.scores import sample_crops

    monkeypatch.setattr("defectforge.filter.embed.default_embedder", lambda size=128, device="cpu": small_embedder)
    app = area_app(fcli)
    rp, sp = _sets(tmp_path)
    base = ["filter", "quality", str(rp), str(sp), "--k", "1", "--subsets", "4"]
    r = CliRunner().invoke(app, base + ["--json", str(tmp_path / "plain.json")])
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert "fid" not in plain and "kid_inception" not in plain and "kid_mean" in plain

    r = CliRunner().invoke(app, base + ["--inception-weights", str(weights), "--json", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    assert "fid" in r.output and "kid_inception" in r.output
    q = json.loads((tmp_path / "q.json").read_text())
    assert {k: q[k] for k in plain} == plain  # the bundled-backbone numbers are unchanged
    assert q["fid_n_real"] == q["fid_n_synth"] == 3  # train-split real defects only
    # the same numbers from the library, step by step
    syn, reals = check_sets(load_dataset(sp), load_dataset(rp))
    emb = inception_embedder(weights)
    fr = emb.embed([c for s in reals for c in sample_crops(s)])
    fs = emb.embed([c for s in syn for c in sample_crops(s)])
    assert q["fid"] == pytest.approx(frechet_distance(fr, fs), rel=1e-9) and q["fid"] > 0
    assert q["kid_inception"] == pytest.approx(kid(fr, fs, subsets=4, seed=0)["kid_mean"], rel=1e-9)

    r = CliRunner().invoke(app, base + ["--inception-weights", str(tmp_path / "missing.pth")])
    assert r.exit_code == 2 and "missing.pth" in r.output and "not found" in r.output
