"""Fold inference batch norms into the convolutions before them (feature extraction only).

A frozen backbone in eval mode computes ``bn(conv(x)) = s * (W * x + b - mean) + beta`` with
``s = gamma / sqrt(var + eps)``: the same as one convolution with weights ``s * W`` and bias
``s * (b - mean) + beta``. Folding removes one pass over every activation map per layer: on
the 2-core CPU the EfficientNet-Lite0 stages of the README defaults (256x632) take about half
the time (``docs/bench/scale.md``). The features change only by float rounding (about 1e-6 of
their scale).

Which batch norm follows which convolution is read from the module tree: a ``BatchNorm2d``
(timm's ``BatchNormAct2d`` included: its activation is kept) registered right after a
``Conv2d`` of as many output channels in the same parent module. That is how timm's
EfficientNet, MobileNet and ResNet blocks are written; as registration order does not prove
data flow, :func:`fold_batchnorm` runs the model on a fixed input before and after and keeps
the unfolded model when the outputs differ by more than rounding.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

_TOL = 1e-4  # relative to the outputs' largest magnitude; rounding is ~1e-6


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        b0 = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * s.reshape(-1, 1, 1, 1))
        bias = (b0 - bn.running_mean) * s + beta
    conv.bias = nn.Parameter(bias, requires_grad=False)


def _after_bn(bn: nn.BatchNorm2d) -> nn.Module:
    """What remains of a folded batch norm: timm's ``BatchNormAct2d`` keeps its dropout and
    activation, a plain one becomes the identity."""
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
    return nn.Sequential(*rest) if rest else nn.Identity()


def _fold_children(module: nn.Module) -> int:
    n = 0
    kids = list(module.named_children())
    for (_, a), (name_b, b) in zip(kids, kids[1:]):
        if (isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) and b.track_running_stats
                and b.running_mean is not None and b.num_features == a.out_channels):
            _folded_conv(a, b)
            setattr(module, name_b, _after_bn(b))
            n += 1
    for _, child in kids:
        n += _fold_children(child)
    return n


def checked_rewrite(model: nn.Module, rewrite: Callable[[nn.Module], int],
                    run: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]],
                    size: tuple[int, int] = (64, 96)) -> tuple[nn.Module, int]:
    """``(model, changes)``: a copy of ``model`` (eval mode) rewritten in place by ``rewrite``
    (which returns how many changes it made), or ``model`` itself with 0 when nothing changes
    or the rewritten copy's outputs (``run(model, x)`` on a fixed input of ``size``) differ
    from the original's by more than float rounding."""
    model.eval()
    new_model = copy.deepcopy(model)
    n = rewrite(new_model)
    if n == 0:
        return model, 0
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *size, generator=gen)
    with torch.inference_mode():
        ref = run(model, x)
        new = run(new_model, x)
    for a, b in zip(ref, new):
        scale = float(a.abs().max()) or 1.0
        if a.shape != b.shape or not bool(torch.isfinite(b).all()) or float((a - b).abs().max()) > _TOL * scale:
            return model, 0
    return new_model, n


def fold_batchnorm(model: nn.Module, run: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]],
                   size: tuple[int, int] = (64, 96)) -> tuple[nn.Module, int]:
    """``(model, folds)``: a copy of ``model`` (eval mode) with its batch norms folded, or
    ``model`` itself with 0 when nothing folds or the check fails. ``run(model, x)`` returns
    the outputs that must not change (e.g. the hooked feature maps)."""
    return checked_rewrite(model, _fold_children, run, size)
