"""Faster inference convolutions (bank.fast_conv): TensorFlow-"SAME" padding inside the
convolution gives timm's ``Conv2dSame`` outputs, shapes included, for every parity of the
input and every kernel; the activation a folded batch norm leaves runs inside the
convolution with the same result; the backbone's features do not change."""

import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame
from torch import nn

from defectforge.bank.backbone import build_extractor
from defectforge.bank.fast_conv import FastConv2d, fast_convolutions
from defectforge.bank.lite import SameConv2d, same_padding as _same
from defectforge.bank.fold import checked_rewrite


def _conv(cin, cout, k, s, d, groups, seed):
    torch.manual_seed(seed)
    return Conv2dSame(cin, cout, k, stride=s, dilation=d, groups=groups, bias=True).eval()


SIZES = [(7, 8), (8, 7), (16, 16), (15, 15), (9, 12), (1, 1), (2, 3)]


@pytest.mark.parametrize("k,s,d", [(1, 1, 1), (1, 2, 1), (2, 2, 1), (3, 1, 1), (3, 2, 1), (5, 2, 1), (4, 3, 1),
                                   (3, 2, 2), (3, 1, 2), ((3, 5), (2, 1), 1)])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("act", [None, nn.ReLU6(), nn.ReLU(), nn.Hardtanh(-0.5, 0.25)])
def test_same_outputs_as_timm_for_every_input_parity(k, s, d, groups, channels_last, act):
    conv = _conv(8, 12, k, s, d, groups, seed=3)
    fast = FastConv2d(conv, act)
    gen = torch.Generator().manual_seed(0)
    for h, w in SIZES:
        x = torch.randn(2, 8, h, w, generator=gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ref = conv(x) if act is None else act(conv(x))
            got = fast(x)
        assert got.shape == ref.shape, (k, s, d, h, w)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", [0, 1, (2, 1)])
def test_plain_convolution_with_its_activation(padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=padding).eval()
    fast = FastConv2d(conv, nn.ReLU6())
    assert not fast.tf_same
    x = torch.randn(3, 6, 11, 14) * 4
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), torch.clamp(conv(x), 0, 6), rtol=1e-5, atol=1e-5)


def test_same_padding_split():
    # TensorFlow: total = (ceil(L/s) - 1) s + (k - 1) d + 1 - L, the odd zero goes after
    assert _same(8, 3, 2, 1) == (0, 1)
    assert _same(7, 3, 2, 1) == (1, 1)
    assert _same(8, 5, 2, 1) == (1, 2)
    assert _same(10, 1, 2, 1) == (0, 0)
    assert _same(9, 3, 1, 2) == (2, 2)


def test_parameters_are_shared_and_a_weight_change_is_seen():
    conv = _conv(4, 4, 3, 2, 1, 4, seed=1)
    fast = FastConv2d(conv)
    assert fast.weight is conv.weight and fast.bias is conv.bias
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        fast(x)  # fills the cache of the shifted kernel
        conv.weight.mul_(2.0)
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)


def test_gradients_flow_like_timm():
    conv = _conv(3, 5, 3, 2, 1, 1, seed=2).train()
    conv.weight.requires_grad_(True)
    fast = FastConv2d(conv, nn.ReLU())
    x = torch.randn(2, 3, 10, 12)
    torch.relu(conv(x)).square().sum().backward()
    g_ref = conv.weight.grad.clone()
    conv.weight.grad = None
    fast(x).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, g_ref, rtol=1e-5, atol=1e-5)


def test_unsupported_inputs_are_refused():
    with pytest.raises(ValueError):
        FastConv2d(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError):
        FastConv2d(nn.Conv2d(2, 2, 3), nn.GELU())


class _Shared(nn.Module):
    """One ReLU registered after the convolution but applied after a residual add: moving it
    into the convolution would change the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x) - 5.0 + x)


def test_a_rewrite_that_changes_outputs_is_not_kept():
    net = _Shared().eval()
    got, n = checked_rewrite(net, fast_convolutions, lambda m, x: [m(x)])
    assert n == 0 and got is net and isinstance(net.conv, nn.Conv2d) and not isinstance(net.conv, FastConv2d)


def test_fast_convolutions_counts_and_moves_activations():
    net = nn.Sequential(_conv(3, 3, 3, 2, 1, 1, 0), nn.Conv2d(3, 3, 3), nn.Sequential(nn.Identity(), nn.ReLU6()),
                        nn.Sequential(_conv(3, 3, 5, 2, 1, 3, 1)), nn.Conv2d(3, 3, 1), nn.GELU())
    x = torch.randn(1, 3, 20, 22)
    with torch.inference_mode():
        ref = net(x)
    assert fast_convolutions(net) == 3
    assert fast_convolutions(net) == 0
    assert isinstance(net[0], FastConv2d) and net[0].act is None
    assert isinstance(net[1], FastConv2d) and isinstance(net[1].act, nn.ReLU6) and isinstance(net[2], nn.Identity)
    assert isinstance(net[3][0], FastConv2d)
    assert type(net[4]) is nn.Conv2d  # followed by an activation it cannot take: unchanged
    with torch.inference_mode():
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")
def test_extractor_features_unchanged():
    slow, _ = build_extractor("efficientnet_lite0", random_init=True, fast_conv=False)
    fast, _ = build_extractor("efficientnet_lite0", random_init=True)
    assert any(type(m) is SameConv2d for m in slow.model.modules())
    assert not any(type(m) is SameConv2d for m in fast.model.modules())
    assert sum(isinstance(m, FastConv2d) and m.act is not None for m in fast.model.modules()) >= 8
    for shape in [(2, 3, 64, 158), (1, 3, 72, 104)]:
        x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for a, b in zip(slow(x), fast(x)):
                assert a.shape == b.shape
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
