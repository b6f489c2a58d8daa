"""Datasets: one sample type, readers and writers for MVTec folders, manifest CSV,
labelme, YOLO and COCO, and dataset checks."""

from defectforge.data.image_io import as_rgb8, read_image, read_mask, write_image, write_mask
from defectforge.data.sample import GOOD, Box, Dataset, Sample, boxes_from_mask

__all__ = [
    "GOOD", "Box", "Dataset", "Sample", "as_rgb8", "boxes_from_mask",
    "read_image", "read_mask", "write_image", "write_mask",
]
