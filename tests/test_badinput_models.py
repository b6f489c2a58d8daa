"""Issue 18 items 9 and 11, model files: a model claiming a huge input size and a model whose
memory bank holds NaN are refused at load (one line, exit 2), and fitting refuses non-finite
features, instead of allocating 120 GB or scoring every image 1.8e19."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from badinput_kit import fit_tiny_model, image, invoke, one_line_error, small_manifest

from defectforge.errors import InputError


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    model = fit_tiny_model(d)
    image(d / "probe.png", seed=77)
    return model, d / "probe.png"


def _tampered(src, dst, **changes):
    obj = torch.load(src, map_location="cpu", weights_only=True)
    state = obj["state"] if "state" in obj else obj  # fitted values live under "state"
    for k, fn in changes.items():
        state[k] = fn(state[k])
    torch.save(obj, dst)
    return dst


def _nan_bank(bank):
    b = bank.clone()
    b[0, 0] = float("nan")
    return b


@pytest.mark.parametrize("change,expect", [
    ({"input_size": lambda _: [100000, 100000]}, "model input size 100000x100000 = 10,000,000,000 pixels is over"),
    ({"input_size": lambda _: [0, 32]}, "model input size 0x32 is not positive"),
    ({"bank_normal": _nan_bank}, "bank_normal holds 1 non-finite value(s)"),
    ({"threshold": lambda _: float("nan")}, "threshold is NaN"),
    ({"bank_normal": lambda b: b[:0].clone()}, "the normal memory bank is empty"),
    ({"threshold": lambda _: "abc"}, "threshold 'abc' is not a number"),
    ({"grid": lambda _: [0, 0]}, "feature grid 0x0 does not fit the input size"),
    ({"grid": lambda _: [2, 0]}, "feature grid 2x0 does not fit"),
    ({"grid": lambda _: ["a", 1]}, "feature grid ['a', 1] is not two integers"),
])
def test_tampered_model_refused_at_load(fitted, tmp_path, change, expect):
    model, probe = fitted
    bad = _tampered(model, tmp_path / "bad.dfm", **change)
    one_line_error(invoke("detect", "predict", bad, probe, "--out", tmp_path / "pred"), "bad.dfm", expect)
    assert not (tmp_path / "pred").exists()


def test_untampered_model_predicts(fitted, tmp_path):
    model, probe = fitted
    res = invoke("detect", "predict", model, probe, "--out", tmp_path / "pred")
    assert res.exit_code == 0, res.output
    score = float((tmp_path / "pred" / "scores.csv").read_text().splitlines()[1].split(",")[1])
    assert np.isfinite(score) and abs(score) < 1e6


def test_fit_refuses_non_finite_features(tmp_path):
    from defectforge.data import load_dataset
    from defectforge.detect import ExDD

    root = small_manifest(tmp_path / "ds", 4, 0, split="train").parent
    m = ExDD(random_init=True, image_size=(32, 32))
    with torch.no_grad():
        for prm in m.extractor.parameters():
            prm.fill_(float("nan"))
    with pytest.raises(InputError, match="bank_normal holds .* non-finite"):
        m.fit(list(load_dataset(root)))


def _tampered_params(src, dst, **params):
    obj = torch.load(src, map_location="cpu", weights_only=True)
    entry = obj["models"][next(iter(obj["models"]))] if "models" in obj else obj
    entry["params"].update(params)
    torch.save(obj, dst)
    return dst


def test_tampered_nan_parameter_refused_at_load(fitted, tmp_path):
    model, probe = fitted
    bad = _tampered_params(model, tmp_path / "bad.dfm", sigma=float("nan"))
    one_line_error(invoke("detect", "predict", bad, probe, "--out", tmp_path / "pred"), "bad.dfm",
                   "parameter sigma is nan")


@pytest.fixture(scope="module")
def fitted3d(tmp_path_factory):
    d = tmp_path_factory.mktemp("m3d")
    from defectforge.synth3d.parts import make_part

    part = make_part("flange", 3000, np.random.default_rng(0))
    (d / "ds" / "flange" / "train").mkdir(parents=True)
    (d / "ds" / "flange" / "test").mkdir(parents=True)
    np.savetxt(d / "ds" / "flange" / "train" / "template.txt", part.points)
    np.savetxt(d / "ds" / "flange" / "test" / "good_0.txt", part.points)
    res = invoke("detect3d", "fit", d / "ds", "-o", d / "m3.pt")
    assert res.exit_code == 0, res.output
    return d / "m3.pt", d / "ds" / "flange" / "test" / "good_0.txt"


@pytest.mark.parametrize("params,expect", [
    ({"n_groups": -1}, "parameter n_groups must be positive, got -1"),
    ({"voxel": float("nan")}, "parameter voxel is nan"),
    ({"ks": (40, 0, 120)}, "parameter ks must be positive"),
])
def test_tampered_3d_model_refused_at_load(fitted3d, tmp_path, params, expect):
    model, cloud = fitted3d
    bad = _tampered_params(model, tmp_path / "bad3.pt", **params)
    one_line_error(invoke("detect3d", "predict", bad, cloud, "-o", tmp_path / "pred"), "bad3.pt", expect)
    assert not (tmp_path / "pred").exists()
    res = invoke("detect3d", "predict", model, cloud, "-o", tmp_path / "ok")
    assert res.exit_code == 0, res.output
