"""Faster inference convolutions for the frozen feature backbones (feature extraction only).

Two rewrites, each giving the same outputs up to float rounding (checked on a fixed input
by :func:`defectforge.bank.fold.fold_batchnorm`'s test; measured in ``docs/bench/scale.md``):

**TensorFlow "SAME" padding inside the convolution.** The ``tf_efficientnet_lite*``
backbones pad every strided convolution TensorFlow's way: ``P = (ceil(L / s) - 1) s +
(k - 1) d + 1 - L`` zeros per dimension, ``P // 2`` before and the rest after. timm's
``Conv2dSame`` does that with ``F.pad`` (a copy of the whole activation, which also loses
the channels-last layout) before an unpadded convolution: the depthwise 3x3 of
EfficientNet-Lite0's second stage at the README defaults takes 5.7 ms per image that way on
the 2-core CPU, 0.5 ms as one padded convolution. When ``P`` is even the padding is
symmetric. When it is odd (one more zero after than before) and the dilation is 1, a zero
tap put in front of the kernel in that dimension and a symmetric padding of ``P // 2 + 1``
reads the same inputs with the same weights: output ``i`` starts ``P // 2 + 1`` before
``i s``, the zero tap takes the first of those, the real taps start ``P // 2`` before
``i s`` as TensorFlow's. Odd ``P`` with dilation keeps timm's padded path.

**The activation in the convolution.** After :mod:`~defectforge.bank.fold` a batch norm
with an activation (timm's ``BatchNormAct2d``) leaves only its ReLU / ReLU6 behind the
convolution: a second pass over every activation map. On a CPU with oneDNN (PyTorch's
``mkldnn`` backend) the convolution applies it as a post-op in the same pass
(``torch.ops.mkldnn._convolution_pointwise``, the kernel PyTorch's own compiler uses for
this fusion); elsewhere, with gradients, or if that call fails, the convolution and the
activation run one after the other.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from defectforge.bank.lite import SameConv2d, pad_same, same_padding


def _post_op(act: nn.Module) -> tuple[str, list[float]] | None:
    """The oneDNN post-op (name, scalars) that applies ``act``, or None when there is none."""
    if isinstance(act, nn.ReLU6):
        return "hardtanh", [0.0, 6.0]
    if isinstance(act, nn.Hardtanh):
        return "hardtanh", [float(act.min_val), float(act.max_val)]
    if isinstance(act, nn.ReLU):
        return "relu", []
    return None


def _zero_padded(conv: nn.Conv2d) -> bool:
    """Zero padding given as numbers (what :class:`FastConv2d` can take over)."""
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


class FastConv2d(nn.Conv2d):
    """A ``Conv2d`` / timm ``Conv2dSame`` (parameters shared) with the padding done inside the
    convolution and, optionally, an activation applied by it (module doc)."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None):
        if not _zero_padded(conv):
            raise ValueError("only zero-padded convolutions with numeric padding")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, device="meta")
        self.weight = conv.weight
        self.bias = conv.bias
        self.tf_same = _is_conv2d_same(conv)
        self.act = act
        self.post_op = _post_op(act) if act is not None else None
        if act is not None and self.post_op is None:
            raise ValueError(f"activation {type(act).__name__} cannot be fused")
        self._cache: dict[tuple, torch.Tensor] = {}

    def _plan(self, h: int, w: int) -> tuple[tuple[int, int], tuple[bool, bool]] | None:
        if not self.tf_same:
            return (int(self.padding[0]), int(self.padding[1])), (False, False)
        pads, shifts = [], []
        for length, k, s, d in zip((h, w), self.kernel_size, self.stride, self.dilation):
            before, after = same_padding(length, k, s, d)
            if after != before and d != 1:
                return None
            pads.append(after)
            shifts.append(after != before)
        return (pads[0], pads[1]), (shifts[0], shifts[1])

    def _weight(self, shifts: tuple[bool, bool], channels_last: bool) -> torch.Tensor:
        w = self.weight
        if not any(shifts):
            return w
        pad = (int(shifts[1]), 0, int(shifts[0]), 0)  # the zero tap in front
        if w.requires_grad and torch.is_grad_enabled():  # training: differentiable, not cached
            return F.pad(w, pad)
        # an in-place change of the weight bumps its version (inference tensors have none: they
        # can only change inside inference mode, which nothing here does)
        version = -1 if w.is_inference() else w._version
        key = (shifts, channels_last, version, w.data_ptr(), w.device, w.dtype)
        got = self._cache.get(key)
        if got is None:
            got = F.pad(w.detach(), pad)
            if channels_last:
                got = got.contiguous(memory_format=torch.channels_last)
            self._cache = {key: got} if len(self._cache) >= 8 else {**self._cache, key: got}
        return got

    def _fusable(self, x: torch.Tensor, w: torch.Tensor) -> bool:
        return (self.post_op is not None and x.device.type == "cpu" and x.dtype == torch.float32
                and x.dim() == 4 and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
                and torch.backends.mkldnn.is_available())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plan(int(x.shape[-2]), int(x.shape[-1]))
        if plan is None:  # odd padding with dilation: timm's way (pad, then convolve)
            y = F.conv2d(pad_same(x, self.kernel_size, self.stride, self.dilation), self.weight, self.bias,
                         self.stride, 0, self.dilation, self.groups)
            return self.act(y) if self.act is not None else y
        pads, shifts = plan
        cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        w = self._weight(shifts, cl)
        if self._fusable(x, w):
            try:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, w, self.bias, list(pads), list(self.stride), list(self.dilation), self.groups,
                    self.post_op[0], self.post_op[1], "")
            except (RuntimeError, AttributeError, NotImplementedError):
                self.post_op = None  # this build cannot: convolve, then activate, from now on
        y = F.conv2d(x, w, self.bias, self.stride, pads, self.dilation, self.groups)
        return self.act(y) if self.act is not None else y


def _is_conv2d_same(m: nn.Module) -> bool:
    """A TensorFlow "SAME" convolution: :class:`~defectforge.bank.lite.SameConv2d` or timm's
    ``Conv2dSame`` (only looked up when timm is already imported: nothing else makes one)."""
    if type(m) is SameConv2d:
        return True
    timm_same = sys.modules.get("timm.layers.conv2d_same")
    return timm_same is not None and type(m) is getattr(timm_same, "Conv2dSame", None)


def _lone_activation(m: nn.Module) -> nn.Module | None:
    """The activation ``m`` amounts to in eval mode (an activation module, or a ``Sequential``
    of one activation and identities / dropouts), else None."""
    if _post_op(m) is not None:
        return m
    if isinstance(m, nn.Sequential):
        acts = [c for c in m if not isinstance(c, (nn.Identity, nn.Dropout))]
        if len(acts) == 1 and _post_op(acts[0]) is not None:
            return acts[0]
    return None


def fast_convolutions(model: nn.Module) -> int:
    """In place: every timm ``Conv2dSame`` and every ``Conv2d`` registered right before a
    lone activation (what a folded ``BatchNormAct2d`` leaves) becomes a :class:`FastConv2d`
    (the activation moves into it, an identity takes its place). Returns how many
    convolutions changed. Registration order is not data flow: callers check the outputs
    (as :func:`defectforge.bank.fold.fold_batchnorm` does)."""
    n = 0
    for parent in list(model.modules()):
        kids = list(parent.named_children())
        for j, (name, child) in enumerate(kids):
            if not isinstance(child, nn.Conv2d) or isinstance(child, FastConv2d) or not _zero_padded(child):
                continue
            act = None
            if j + 1 < len(kids):
                act = _lone_activation(kids[j + 1][1])
            if act is None and not _is_conv2d_same(child):
                continue
            setattr(parent, name, FastConv2d(child, act))
            if act is not None:
                setattr(parent, kids[j + 1][0], nn.Identity())
            n += 1
    return n
