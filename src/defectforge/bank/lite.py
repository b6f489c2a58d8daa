"""EfficientNet-Lite0 / Lite2 (TensorFlow "SAME" padding) in plain PyTorch: the default
backbones without importing timm.

``import timm`` imports torchvision, whose ``ops`` import ``torch._dynamo``: about 2.5 s of
every process's start-up on the 2-core CPU (``python -X importtime``: torch 3.0 s, timm
5.3-6.3 s), paid by each ``defectforge detect`` command, studio job and Ray worker that only
needs the frozen backbone. These models are built here instead, module for module as timm
1.0's ``tf_efficientnet_lite0/2``: the same module names and state-dict keys (so the packaged
weights and timm checkpoints load unchanged), the same random initialisation drawn in the same
order (a ``random_init`` model is the same tensors either way), the same forward pass (the
tests check all three against timm). Any other backbone name still goes through timm.

Architecture (the EfficientNet-Lite paper's table): a 3x3 stride-2 stem of 32 channels; seven
stages of depthwise-separable (``ds``) and inverted-residual (``ir``) blocks, no
squeeze-excitation, ReLU6; a 1x1 head of 1280 channels. Lite2 widens the stages by 1.1 and
deepens all but the first and last by 1.2 (rounded up). Batch norms use eps 1e-3 and carry their
activation (``bn.act``, ``bn.drop``), the layout :mod:`defectforge.bank.fold` folds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: (block, repeats, kernel, stride, expansion, output channels) per stage
STAGES = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
          ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320))
#: timm architecture name -> (width, depth) multipliers
VARIANTS = {"tf_efficientnet_lite0": (1.0, 1.0), "tf_efficientnet_lite2": (1.1, 1.2)}
MEAN = STD = (0.5, 0.5, 0.5)


def same_padding(length: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's ``(before, after)`` zero padding of one dimension."""
    total = max((math.ceil(length / s) - 1) * s + (k - 1) * d + 1 - length, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int]) -> torch.Tensor:
    """``x`` zero-padded TensorFlow's way for a convolution (``F.pad`` copy)."""
    (top, bottom), (left, right) = (same_padding(int(x.shape[-2 + i]), kernel[i], stride[i], dilation[i])
                                    for i in range(2))
    return F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding, which depends on the input size (the
    strided convolutions; a stride-1 one pads symmetrically and is a plain ``Conv2d``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride > 1:
        return SameConv2d(cin, cout, k, stride=stride, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, k, stride=1, padding=(k - 1) // 2, groups=groups, bias=False)


class BatchNormAct(nn.BatchNorm2d):
    """Batch norm (eps 1e-3), then an optional ReLU6."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=1e-3)
        self.drop = nn.Identity()
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin)
        self.bn1 = BatchNormAct(cin)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.drop_path(y) + x if self.has_skip else y


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expansion: int):
        super().__init__()
        mid = divisible(cin * expansion)
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct(mid)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid)
        self.bn2 = BatchNormAct(mid)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(self.aa(y))))
        return self.drop_path(y) + x if self.has_skip else y


def divisible(v: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of ``divisor``, never more than 10 % below ``v``."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with timm's module names (``conv_stem``, ``bn1``, ``blocks.s.j``,
    ``conv_head``, ``bn2``, ``classifier``), ``feature_info`` and ``pretrained_cfg``."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000):
        super().__init__()
        self.conv_stem = _conv(3, 32, 3, stride=2)
        self.bn1 = BatchNormAct(32)
        # timm's block builder makes and drops a test squeeze-excitation here (two 1x1
        # convolutions of 8 channels); their random draws are made too, so that a random
        # initialisation is timm's tensor for tensor
        nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        stages, cin, reduction = [], 32, 2
        self.feature_info: list[dict] = []
        for s, (kind, reps, k, stride, exp, cout) in enumerate(STAGES):
            cout = divisible(cout * width)
            if 0 < s < len(STAGES) - 1:
                reps = int(math.ceil(reps * depth))
            blocks = []
            for j in range(reps):
                st = stride if j == 0 else 1
                blocks.append(DepthwiseSeparable(cin, cout, k, st) if kind == "ds"
                              else InvertedResidual(cin, cout, k, st, exp))
                cin = cout
            stages.append(nn.Sequential(*blocks))
            reduction *= stride
            if s == len(STAGES) - 1 or STAGES[s + 1][3] > 1:  # a stage's end before a stride
                self.feature_info.append({"module": f"blocks.{s}", "num_chs": cout, "reduction": reduction})
        self.blocks = nn.Sequential(*stages)
        self.num_features = 1280
        self.conv_head = _conv(cin, self.num_features, 1)
        self.bn2 = BatchNormAct(self.num_features)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = {"mean": MEAN, "std": STD}
        for m in self.modules():
            _init_tf(m)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(self.forward_features(x)).flatten(1))


def _init_tf(m: nn.Module) -> None:
    """TensorFlow's EfficientNet initialisation (as timm draws it, module by module)."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        bound = 1.0 / math.sqrt(m.weight.size(0))
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.zeros_(m.bias)


def create(arch: str, num_classes: int | None = None) -> EfficientNetLite:
    """The model for a timm architecture name in :data:`VARIANTS`."""
    width, depth = VARIANTS[arch]
    return EfficientNetLite(width, depth, 1000 if num_classes is None else num_classes)
