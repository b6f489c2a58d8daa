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
