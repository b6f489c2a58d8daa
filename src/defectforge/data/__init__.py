"""Datasets: one sample type, readers and writers for MVTec folders, manifest CSV,
labelme, YOLO and COCO, and dataset checks.

``load_dataset(path)`` reads any supported format (detected by :func:`detect_format`);
``write_dataset(ds, dst, format)`` writes one; ``check_dataset(path)`` reports counts,
sizes, mask statistics and problems.
"""

from defectforge.data.check import CheckReport, check_dataset
from defectforge.data.coco import read_coco, write_coco
from defectforge.data.formats import EXPORT_FORMATS, FORMATS, detect_format, load_dataset, write_dataset
from defectforge.data.image_io import as_rgb8, read_image, read_mask, write_image, write_mask
from defectforge.data.labelme import labelme_to_mask, read_labelme, read_labelme_folder, write_labelme
from defectforge.data.manifest import export_manifest, read_manifest, write_manifest
from defectforge.data.mvtec import read_mvtec, write_mvtec
from defectforge.data.sample import GOOD, Box, Dataset, Sample, boxes_from_mask
from defectforge.data.yolo import read_yolo, write_yolo

__all__ = [
    "GOOD", "Box", "Dataset", "Sample", "as_rgb8", "boxes_from_mask",
    "read_image", "read_mask", "write_image", "write_mask",
    "EXPORT_FORMATS", "FORMATS", "detect_format", "load_dataset", "write_dataset", "CheckReport", "check_dataset",
    "read_mvtec", "write_mvtec", "read_manifest", "write_manifest", "export_manifest",
    "read_labelme", "read_labelme_folder", "labelme_to_mask", "write_labelme",
    "read_yolo", "write_yolo", "read_coco", "write_coco",
]
