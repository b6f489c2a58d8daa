"""A mask of another size than its image is refused wherever it is read (``Sample.mask`` /
``Sample.image``), naming the mask (or the annotation file that declared a wrong size) and
the image: not only by ``data check`` and a few commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from badinput_kit import H, W, coco, image, invoke, labelme, manifest, mask, one_line_error

from defectforge.data import Sample, load_dataset
from defectforge.errors import InputError


def _wrong_size_manifest(root):
    image(root / "images" / "a.png")
    mask(root / "masks" / "a.png", box=(1, 1, 5, 5), hw=(10, 12))
    image(root / "images" / "g.png", seed=2)
    return manifest(root, [("images/a.png", "train", "dent", "masks/a.png"), ("images/g.png", "train", "good", "")])


@pytest.mark.parametrize("to", ["manifest", "mvtec", "labelme"])
def test_convert_refuses_mask_file_of_another_size(tmp_path, to):
    root = _wrong_size_manifest(tmp_path / "ds").parent
    one_line_error(invoke("data", "convert", root, tmp_path / "out", "--to", to),
                   str(root / "masks" / "a.png"), "mask is 12x10 (WxH) but the image is 32x24",
                   str(root / "images" / "a.png"))
    assert not (tmp_path / "out").exists()


def test_sample_mask_checks_the_image_size(tmp_path):
    root = _wrong_size_manifest(tmp_path / "ds").parent
    s = next(s for s in load_dataset(root) if s.is_defect)
    with pytest.raises(InputError, match=r"a\.png: mask is 12x10 \(WxH\) but the image is 32x24"):
        s.mask
    with pytest.raises(InputError, match="mask is 12x10"):
        s.load()
    # an image in memory is the reference too
    with pytest.raises(InputError, match="mask is 12x10"):
        Sample(label="dent", image_array=np.zeros((H, W, 3), np.uint8), mask_path=s.mask_path).mask
    ok = Sample(label="dent", path=s.path, mask_path=mask(tmp_path / "ok.png"))
    assert ok.mask.shape == (H, W) and ok.load().mask.shape == (H, W)


def test_labelme_declared_size_differs_from_image(tmp_path):
    folder = tmp_path / "lm"
    p = labelme(folder, [[2, 2], [10, 2], [10, 10]])
    doc = json.loads(p.read_text())
    doc["imageWidth"], doc["imageHeight"] = 40, 30
    p.write_text(json.dumps(doc))
    s = load_dataset(folder)[0]
    with pytest.raises(InputError, match=r"a\.json: declares the image size 40x30 \(WxH\), but the image is 32x24"):
        s.mask
    with pytest.raises(InputError, match="declares the image size 40x30"):
        load_dataset(folder)[0].image
    one_line_error(invoke("data", "convert", folder, tmp_path / "out", "--to", "manifest"),
                   str(p), "declares the image size 40x30", str(folder / "a.png"))


def test_coco_declared_size_differs_from_image(tmp_path):
    imgs = [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}]
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8],
           "segmentation": [[2, 3, 11, 3, 11, 10, 2, 10]], "iscrowd": 0}
    p = coco(tmp_path / "co", imgs, [ann])
    one_line_error(invoke("data", "convert", tmp_path / "co", tmp_path / "out", "--to", "mvtec"),
                   str(p), "declares the image size 50x40 (WxH), but the image is 32x24")


def test_right_sizes_still_read(tmp_path):
    folder = tmp_path / "lm"
    labelme(folder, [[2, 2], [10, 2], [10, 10]])
    s = load_dataset(folder)[0]
    assert s.mask.shape == s.image.shape[:2] == (H, W)
