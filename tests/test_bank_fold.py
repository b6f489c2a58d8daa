"""Batch norms folded into the convolutions of a feature extractor: same features up to rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defectforge.bank.backbone import build_extractor, layer_outputs
from defectforge.bank.fold import fold_batchnorm

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


def _randomise_bn_stats(model: nn.Module, seed: int) -> None:
    """Random running statistics and affine parameters (a fresh random-init net has mean 0, var 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18"])
def test_folded_extractor_gives_the_same_features_without_batch_norms(arch):
    plain, _ = build_extractor(arch, random_init=True, seed=3, fold_bn=False)
    _randomise_bn_stats(plain.model, 5)

    def run(m, x):
        return layer_outputs(m, plain.layers, x)

    plain.remove_hooks()
    folded_model, n = fold_batchnorm(plain.model, run)
    assert n > 5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded_model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.model.modules())  # the input model is left as it was
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, new = run(plain.model, x), run(folded_model, x)
    for a, b in zip(ref, new):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_build_extractor_folds_by_default_and_can_keep_batch_norms():
    ex, _ = build_extractor("efficientnet_lite0")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ex.model.modules())
    keep, _ = build_extractor("efficientnet_lite0", fold_bn=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in keep.model.modules())
    x = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        for a, b in zip(ex(x), keep(x)):
            assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


class _Crossed(nn.Module):
    """A batch norm registered after a convolution it does not follow (it normalises the input of
    the second convolution): registration order is not data flow, so folding must be refused."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv_b = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv_b(self.bn(x)) + self.conv_a(x).mean()


def test_folding_that_would_change_the_outputs_is_refused():
    m = _Crossed()
    _randomise_bn_stats(m, 7)
    m.eval()
    out, n = fold_batchnorm(m, lambda mod, x: [mod(x)])
    assert n == 0 and out is m
    assert isinstance(m.bn, nn.BatchNorm2d)


def test_nothing_to_fold_returns_the_model():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    out, n = fold_batchnorm(m, lambda mod, x: [mod(x)])
    assert out is m and n == 0
