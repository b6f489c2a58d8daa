"""Layout detection must not lose a broken annotation file: a truncated COCO split or labelme
file is named in a one-line error, never skipped (a whole split silently gone)."""

from __future__ import annotations

import json

import pytest
from badinput_kit import coco, image, invoke, labelme, one_line_error

from defectforge.data import detect_format, load_dataset
from defectforge.errors import InputError


def _coco_with_truncated_split(root):
    imgs = [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}]
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "segmentation": [], "iscrowd": 0}
    train = coco(root, imgs, [ann])
    text = train.read_text()
    test = train.with_name("instances_test.json")
    image(root / "images" / "test" / "a.png")
    test.write_text(text)
    train.write_text(text[: len(text) // 2])  # truncated: the train split
    return train


def test_truncated_coco_split_is_named_not_dropped(tmp_path):
    root = tmp_path / "ds"
    train = _coco_with_truncated_split(root)
    with pytest.raises(InputError, match="instances_train.json: malformed JSON"):
        load_dataset(root)
    one_line_error(invoke("data", "check", root), "instances_train.json", "malformed JSON")
    one_line_error(invoke("data", "convert", root, tmp_path / "out", "--to", "manifest"),
                   str(train), "malformed JSON")
    assert not (tmp_path / "out").exists()


def test_truncated_coco_beside_coco_files_in_the_folder(tmp_path):
    root = tmp_path / "ds"
    train = _coco_with_truncated_split(root)
    for p in (root / "annotations").iterdir():  # the JSON files directly in the dataset folder
        p.rename(root / p.name)
    (root / "annotations").rmdir()
    with pytest.raises(InputError, match="instances_train.json: malformed JSON"):
        detect_format(root)
    assert train.name == "instances_train.json"


def test_unrelated_broken_json_does_not_hide_another_layout(tmp_path):
    """A stray broken .json in a folder that is plainly something else (MVTec) is not an error."""
    root = tmp_path / "mv"
    image(root / "train" / "good" / "a.png")
    (root / "notes.json").write_text("{")
    assert detect_format(root) == "mvtec"


def test_truncated_first_labelme_file_is_named(tmp_path):
    folder = tmp_path / "lm"
    first = labelme(folder, [[2, 2], [10, 2], [10, 10]], image_path="a.png")
    labelme(folder, [[2, 2], [10, 2], [10, 10]], image_path="b.png")
    first.write_text(first.read_text()[:40])
    one_line_error(invoke("data", "convert", folder, tmp_path / "out", "--to", "manifest"),
                   str(first), "malformed JSON")


def test_only_broken_json_names_it_while_detecting(tmp_path):
    folder = tmp_path / "lm"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"shapes": [], "imagePath": "a.png"})[:20])
    err = one_line_error(invoke("data", "check", folder), str(folder / "a.json"), "malformed JSON")
    assert "detecting the dataset layout" in err
