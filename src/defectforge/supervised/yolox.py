"""YOLOX-nano / YOLOX-tiny behind the torchvision detection calling convention.

YOLOX (Megvii, Apache-2.0) comes from the pure-Python ``yolox-datamint`` fork; install it
with ``pip install --no-deps yolox-datamint==0.3.1`` plus the ``[yolox]`` extra (loguru,
thop: the only modules it imports besides torch/cv2/numpy). Its own metadata would pull
onnx, onnxruntime, tensorboard and opencv-python, hence ``--no-deps``.

:class:`YoloxDetector` is a plain ``nn.Module`` that speaks the same language as
torchvision's detectors, so :class:`~defectforge.supervised.train.BoxDetector`,
``train_detector`` and ``evaluate_boxes`` use it unchanged:

- train mode: ``model(images, targets) -> {"loss_iou", "loss_obj", "loss_cls"}`` whose sum
  is YOLOX's total loss; ``images`` are CHW float tensors in 0..1 (any sizes), ``targets``
  dicts with ``boxes`` (n, 4) xyxy in the image's pixels and ``labels`` 1..C;
- eval mode: ``model(images) -> [{"boxes", "labels", "scores"}]`` in the input images'
  pixel coordinates, labels 1..C.

Inside, each image is resized so that its shorter side is ``image_size`` (the longer side
capped at ``max_size``, as torchvision's transform does), scaled to 0..255 (YOLOX takes raw
pixel values, no mean/std), and the batch is padded at the bottom/right with grey 114 to
a common size that is a multiple of 32 (YOLOX's largest stride). Targets become YOLOX's
``[B, N, (class, cx, cy, w, h)]`` in padded-image pixels with class = label - 1.
Detections are ``objectness x best class probability``, thresholded, then class-wise NMS.

There are no pretrained weights: the network is randomly initialised (with the
caller's torch seed) like YOLOX's own ``get_model`` (BN eps 1e-3, prior-probability 0.01
biases on the objectness and class outputs), except for the BN momentum (see
:data:`BN_MOMENTUM`). From scratch it wants a higher learning rate than the pretrained
torchvision archs: ``lr`` 0.05-0.1 at batch 4 (the gradient is clipped at norm 10).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from defectforge.errors import ConfigError

#: arch name -> (depth multiple, width multiple, depthwise convolutions)
YOLOX_VARIANTS: dict[str, tuple[float, float, bool]] = {
    "yolox-nano": (0.33, 0.25, True),
    "yolox-tiny": (0.33, 0.375, False),
}
INSTALL_HINT = 'pip install --no-deps yolox-datamint==0.3.1 && pip install "defectforge[yolox]"'
STRIDE = 32
PAD_VALUE = 114.0
#: batch-norm running-average momentum. YOLOX uses 0.03 for its 300-epoch runs; over the few
#: hundred steps of a CPU run the running statistics then lag the fast-changing weights so
#: badly that eval-mode predictions collapse (mAP 0 where 0.1 gives 0.8 on a toy set).
BN_MOMENTUM = 0.1


def _yolox_modules():
    """The YOLOX building blocks, or a :class:`ConfigError` naming the install command."""
    try:
        with warnings.catch_warnings():  # thop (imported by yolox.utils) uses distutils' LooseVersion
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="thop.*")
            from yolox.models import YOLOPAFPN, YOLOX, YOLOXHead
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "yolox"
        raise ConfigError(f"the YOLOX detectors need the yolox-datamint package ({missing!r} is missing): "
                          f"{INSTALL_HINT}") from None
    return YOLOX, YOLOPAFPN, YOLOXHead


class YoloxDetector(nn.Module):
    """YOLOX with the torchvision detection interface (see the module docstring)."""

    def __init__(self, arch: str, num_classes: int, image_size: int = 256, max_size: int | None = None,
                 score_thresh: float = 0.05, nms_thresh: float = 0.65, detections_per_img: int = 100,
                 pre_nms_top_n: int = 1000):
        super().__init__()
        if arch not in YOLOX_VARIANTS:
            raise ConfigError(f"unknown YOLOX variant {arch!r} (choose from {', '.join(YOLOX_VARIANTS)})")
        if num_classes < 1:
            raise ConfigError("a detector needs at least one defect class")
        if image_size < STRIDE:
            raise ConfigError(f"image_size must be >= {STRIDE}, got {image_size}")
        yolox_cls, pafpn_cls, head_cls = _yolox_modules()
        depth, width, depthwise = YOLOX_VARIANTS[arch]
        in_channels = [256, 512, 1024]
        backbone = pafpn_cls(depth, width, in_channels=in_channels, act="silu", depthwise=depthwise)
        head = head_cls(int(num_classes), width, in_channels=in_channels, act="silu", depthwise=depthwise)
        self.net = yolox_cls(backbone, head)
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, BN_MOMENTUM
        self.net.head.initialize_biases(1e-2)
        self.arch, self.num_classes = arch, int(num_classes)
        self.image_size, self.max_size = int(image_size), int(max_size or 4 * image_size)
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.detections_per_img, self.pre_nms_top_n = int(detections_per_img), int(pre_nms_top_n)

    # -- input -------------------------------------------------------------------------------------
    def _scale_of(self, h: int, w: int) -> float:
        return min(self.image_size / min(h, w), self.max_size / max(h, w))

    def _letterbox(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
        """Resize (shorter side = image_size), scale to 0..255 and pad to a multiple of 32."""
        if not images:
            raise ValueError("no images")
        resized, scales = [], []
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"expected 3xHxW images, got shape {tuple(img.shape)}")
            h, w = img.shape[-2:]
            s = self._scale_of(h, w)
            nh, nw = max(1, round(h * s)), max(1, round(w * s))
            x = img.float()
            if (nh, nw) != (h, w):
                x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            resized.append(x * 255.0)
            # the exact per-axis factors are nh/h and nw/w; isotropic s is within half a pixel
            scales.append(s)
        hh = max(STRIDE, math.ceil(max(x.shape[1] for x in resized) / STRIDE) * STRIDE)
        ww = max(STRIDE, math.ceil(max(x.shape[2] for x in resized) / STRIDE) * STRIDE)
        batch = resized[0].new_full((len(resized), 3, hh, ww), PAD_VALUE)
        for i, x in enumerate(resized):
            batch[i, :, :x.shape[1], :x.shape[2]] = x
        return batch, scales

    def _targets(self, targets: list[dict[str, torch.Tensor]], scales: list[float], device) -> torch.Tensor:
        """torchvision targets -> YOLOX's zero-padded ``[B, N, (cls, cx, cy, w, h)]``."""
        rows = []
        for t, s in zip(targets, scales):
            b = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4) * s
            lab = torch.as_tensor(t["labels"], device=device).reshape(-1)
            if len(lab) != len(b):
                raise ValueError("targets: boxes and labels differ in length")
            if len(lab) and (int(lab.min()) < 1 or int(lab.max()) > self.num_classes):
                raise ValueError(f"target labels must be in 1..{self.num_classes}")
            wh = b[:, 2:] - b[:, :2]
            keep = (wh > 0).all(1)
            b, wh, lab = b[keep], wh[keep], lab[keep]
            rows.append(torch.cat([(lab - 1).float()[:, None], (b[:, :2] + b[:, 2:]) / 2, wh], 1))
        n = max(len(r) for r in rows)
        out = torch.zeros(len(rows), n, 5, device=device)
        for i, r in enumerate(rows):
            out[i, :len(r)] = r
        return out

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        x, scales = self._letterbox(list(images))
        if self.training:
            if targets is None or len(targets) != len(images):
                raise ValueError("in training mode YOLOX needs one target dict per image")
            labels = self._targets(list(targets), scales, x.device)
            with warnings.catch_warnings():  # YOLOX calls the deprecated torch.cuda.amp.autocast
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*autocast.*")
                out = self.net(x, labels)
            losses = {"loss_iou": out["iou_loss"], "loss_obj": out["conf_loss"], "loss_cls": out["cls_loss"]}
            if torch.is_tensor(out.get("l1_loss")):
                losses["loss_l1"] = out["l1_loss"]
            return losses
        raw = self.net(x)
        return [self._postprocess(raw[i], scales[i], tuple(img.shape[-2:])) for i, img in enumerate(images)]

    def _postprocess(self, p: torch.Tensor, scale: float, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        from torchvision.ops import batched_nms

        conf, cls = p[:, 5:].max(1)
        score = p[:, 4] * conf
        keep = torch.nonzero(score > self.score_thresh).flatten()
        if len(keep) > self.pre_nms_top_n:
            keep = keep[score[keep].topk(self.pre_nms_top_n).indices]
        c, s, cl = p[keep, :4], score[keep], cls[keep]
        boxes = torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], 1) / scale
        h, w = hw
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        ok = ((boxes[:, 2] - boxes[:, 0]) > 1e-2) & ((boxes[:, 3] - boxes[:, 1]) > 1e-2)
        boxes, s, cl = boxes[ok], s[ok], cl[ok]
        k = batched_nms(boxes, s, cl, self.nms_thresh)[:self.detections_per_img]
        return {"boxes": boxes[k], "labels": cl[k] + 1, "scores": s[k]}

    def extra_repr(self) -> str:
        return f"arch={self.arch}, num_classes={self.num_classes}, image_size={self.image_size}"


def build_yolox(arch: str, num_classes: int, image_size: int = 256, max_size: int | None = None,
                score_thresh: float = 0.05, detections_per_img: int = 100) -> YoloxDetector:
    """A randomly initialised :class:`YoloxDetector` (seed it with the caller's torch seed)."""
    return YoloxDetector(arch, num_classes, image_size=image_size, max_size=max_size,
                         score_thresh=score_thresh, detections_per_img=detections_per_img)
