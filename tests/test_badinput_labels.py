"""Issue 18 items 4 and 7: paths that leave the dataset root, and broken labels.

Readers refuse them with ``error: <file>: <problem>`` (exit 2); ``data check`` lists them
(exit 1) instead of saying "no problems"."""

from __future__ import annotations

import json

import pytest
from badinput_kit import (check_lists, coco, image, invoke, labelme, manifest, mask, one_line_error,
                          small_manifest, yolo)

from defectforge.data import load_dataset
from defectforge.errors import InputError

# ----------------------------------------------------------------- item 4: outside the root


def _outside_manifest(tmp_path):
    image(tmp_path / "secret.png", seed=9)  # a real image, outside the dataset folder
    root = tmp_path / "deep" / "ds"
    small_manifest(root, 1, 1)
    with open(root / "split.csv", "a") as fh:
        fh.write("../../secret.png,train,good,\n")
    return root


def test_manifest_row_outside_root_refused(tmp_path):
    root = _outside_manifest(tmp_path)
    line = one_line_error(invoke("data", "convert", root, tmp_path / "out", "--to", "manifest"),
                          "split.csv", "line 4", "outside the dataset folder", "--allow-outside-root")
    assert "secret.png" in line
    assert not (tmp_path / "out").exists()
    one_line_error(invoke("data", "convert", root, tmp_path / "out", "--to", "yolo"), "outside the dataset folder")
    check_lists(root, "secret.png", "outside the dataset folder", tmp=tmp_path)


def test_manifest_outside_root_allowed_with_flag(tmp_path):
    root = _outside_manifest(tmp_path)
    res = invoke("data", "convert", root, tmp_path / "out", "--to", "manifest", "--allow-outside-root")
    assert res.exit_code == 0, res.output
    assert len(load_dataset(tmp_path / "out")) == 3
    res = invoke("data", "check", root, "--allow-outside-root")
    assert res.exit_code == 0, res.output


def test_manifest_absolute_path_and_mask_outside_refused(tmp_path):
    root = small_manifest(tmp_path / "ds", 1, 1).parent
    mask(tmp_path / "m.png")
    with open(root / "split.csv", "a") as fh:
        fh.write(f"{root / 'images' / 'g0.png'},val,good,\n")  # absolute but inside: fine
        fh.write("images/d0.png,val,dent,../m.png\n")
    with pytest.raises(InputError, match=r"line 5: mask .*m.png is outside the dataset folder"):
        load_dataset(root)
    image(tmp_path / "abs.png")
    manifest(tmp_path / "ds2", [(str(tmp_path / "abs.png"), "train", "good", "")])
    with pytest.raises(InputError, match="abs.png is outside the dataset folder"):
        load_dataset(tmp_path / "ds2")


def test_labelme_image_path_outside_refused(tmp_path):
    image(tmp_path / "elsewhere" / "x.png")
    folder = tmp_path / "lm"
    labelme(folder, [[2, 2], [20, 2], [20, 15]], image_path="../elsewhere/x.png", make_image=False)
    image(folder / "a.png")  # the real defect image beside it would become "good"
    one_line_error(invoke("data", "convert", folder, tmp_path / "out", "--to", "manifest"),
                   "x.json", "outside the dataset folder")
    check_lists(folder, "x.json", "outside the dataset folder", tmp=tmp_path)


def test_labelme_sibling_images_folder_still_allowed(tmp_path):
    image(tmp_path / "ds" / "images" / "a.png")
    labelme(tmp_path / "ds" / "labelme", [[2, 2], [20, 2], [20, 15]], image_path="../images/a.png", make_image=False)
    ds = load_dataset(tmp_path / "ds" / "labelme")
    assert [s.label for s in ds] == ["dent"]


def test_coco_file_name_outside_refused(tmp_path):
    image(tmp_path / "secret.png")
    root = tmp_path / "c"
    coco(root, [{"id": 1, "file_name": "../../../secret.png", "width": 32, "height": 24}], [])
    with pytest.raises(InputError, match="instances_train.json: image 1: .*outside the dataset folder"):
        load_dataset(root)
    check_lists(root, "instances_train.json", "outside the dataset folder", tmp=tmp_path)


def test_symlinks_out_of_the_dataset_are_refused_in_every_format(tmp_path):
    """A link inside the dataset whose target is outside it is an escape like ``..``: manifest
    rows (lexically inside), MVTec and YOLO folders (found by listing) and YOLO label files."""
    secret = image(tmp_path / "outside" / "secret.png", seed=9)
    root = small_manifest(tmp_path / "m", 1, 1).parent
    (root / "images" / "g0.png").unlink()
    (root / "images" / "g0.png").symlink_to(secret)
    line = one_line_error(invoke("data", "convert", root, tmp_path / "out", "--to", "manifest"),
                          "split.csv", "a link to", "secret.png", "outside the dataset folder", "--allow-outside-root")
    assert "images/g0.png" in line and not (tmp_path / "out").exists()
    check_lists(root, "a link to", tmp=tmp_path)
    assert invoke("data", "convert", root, tmp_path / "out", "--to", "manifest", "--allow-outside-root").exit_code == 0

    mv = tmp_path / "mv"
    image(mv / "train" / "good" / "a.png")
    (mv / "train" / "good" / "b.png").symlink_to(secret)
    with pytest.raises(InputError, match=r"b.png: image \(a link to .*secret.png\) is outside the dataset folder"):
        load_dataset(mv)
    assert [s.name for s in load_dataset(mv, allow_outside_root=True)] == ["a", "b"]

    label = yolo(tmp_path / "y", "0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "outside" / "host.txt").write_text("vm\n")
    label.unlink()
    label.symlink_to(tmp_path / "outside" / "host.txt")
    with pytest.raises(InputError, match=r"label file \(a link to .*host.txt\) is outside the dataset folder") as e:
        load_dataset(tmp_path / "y")
    assert "vm" not in str(e.value)  # the target is not read, so its text cannot leak into the error


def test_links_that_stay_inside_the_dataset_still_work(tmp_path):
    root = small_manifest(tmp_path / "m", 1, 1).parent
    (root / "images" / "copy.png").symlink_to(root / "images" / "g0.png")
    with open(root / "split.csv", "a") as fh:
        fh.write("images/copy.png,train,good,\n")
    assert "copy" in [s.name for s in load_dataset(root)]
    (tmp_path / "alias").symlink_to(root)  # the dataset folder itself reached through a link
    assert len(load_dataset(tmp_path / "alias")) == len(load_dataset(root))


# ----------------------------------------------------------------- item 7: COCO


def _coco_case(tmp_path, kind):
    imgs = [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
            {"id": 2, "file_name": "b.png", "width": 32, "height": 24}]
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "segmentation": [], "iscrowd": 0}
    anns = [ann]
    cats = None
    expect = ""
    if kind == "string_image_id":
        anns = [dict(ann, image_id="1")]
        expect = "annotation 1: image_id '1' is a string"
    elif kind == "orphan":
        anns = [dict(ann, image_id=7)]
        expect = "annotation 1: image_id 7 matches no image"
    elif kind == "duplicate_image_id":
        imgs[1]["id"] = 1
        expect = "image id 1 is used twice"
    elif kind == "duplicate_annotation_id":
        anns = [ann, dict(ann, image_id=2)]
        expect = "annotation id 1 is used twice"
    elif kind == "unknown_category":
        anns = [dict(ann, category_id=5)]
        expect = "annotation 1: unknown category_id 5"
    elif kind == "negative_box":
        anns = [dict(ann, bbox=[2, 3, -10, 8])]
        expect = "annotation 1: bbox [2, 3, -10, 8] has a negative or zero width/height"
    elif kind == "degenerate_box":
        anns = [dict(ann, bbox=[2, 3, 0, 8])]
        expect = "negative or zero width/height"
    elif kind == "nan_box":
        anns = [dict(ann, bbox=[2, 3, float("nan"), 8])]
        expect = "not finite"
    elif kind == "box_outside_image":
        anns = [dict(ann, bbox=[200, 3, 10, 8])]
        expect = "outside the 32x24 image"
    elif kind == "string_category_id":
        cats = [{"id": "1", "name": "dent"}]
        expect = "category id '1' is a string"
    p = coco(tmp_path / kind, imgs, anns, cats)
    return p, expect


COCO_KINDS = ["string_image_id", "orphan", "duplicate_image_id", "duplicate_annotation_id", "unknown_category",
              "negative_box", "degenerate_box", "nan_box", "box_outside_image", "string_category_id"]


@pytest.mark.parametrize("kind", COCO_KINDS)
def test_coco_broken_labels(tmp_path, kind):
    p, expect = _coco_case(tmp_path, kind)
    one_line_error(invoke("data", "convert", p.parent.parent, tmp_path / "out", "--to", "manifest"),
                   "instances_train.json", expect)
    check_lists(p.parent.parent, "instances_train.json", expect, tmp=tmp_path)


def test_coco_valid_still_reads(tmp_path):
    p, _ = _coco_case(tmp_path, "valid")
    ds = load_dataset(p.parent.parent)
    assert sorted(s.label for s in ds) == ["dent", "good"]


# ----------------------------------------------------------------- item 7: YOLO


@pytest.mark.parametrize("text,expect", [
    ("0 0.5 0.5 1.7 0.2\n", "line 1: value 1.7 is outside [0, 1]"),
    ("0 -0.2 0.5 0.1 0.2\n", "line 1: value -0.2 is outside [0, 1]"),
    ("0 0.5 nan 0.1 0.2\n", "line 1: value nan is not finite"),
    ("0 0.5 0.5 0.1 0.2\n3 0.5 0.5 0.1 0.2\n", "line 2: class 3 is not in data.yaml names (0..0)"),
    ("-1 0.5 0.5 0.1 0.2\n", "line 1: class -1"),
    ("0.5 0.5 0.5 0.1 0.2\n", "line 1: class '0.5' is not an integer"),
    ("0 0.5 0.5 0 0.2\n", "line 1: box has zero width or height"),
    ("0 0.1 0.1 0.9 0.1 inf 0.9\n", "line 1: value inf is not finite"),
])
def test_yolo_broken_labels(tmp_path, text, expect):
    txt = yolo(tmp_path / "y", text)
    line = one_line_error(invoke("data", "convert", tmp_path / "y", tmp_path / "out", "--to", "manifest"),
                          "a.txt", expect)
    assert str(txt) in line
    check_lists(tmp_path / "y", "a.txt", expect, tmp=tmp_path)


def test_yolo_valid_still_reads(tmp_path):
    yolo(tmp_path / "y", "0 0.5 0.5 0.25 0.5\n0 0.1 0.1 0.4 0.1 0.4 0.4\n")
    ds = load_dataset(tmp_path / "y")
    assert sorted(s.label for s in ds) == ["dent", "good"]


# ----------------------------------------------------------------- item 7: labelme


@pytest.mark.parametrize("points,expect", [
    ([[2, 2], [float("nan"), 2], [20, 15]], "shape 0: point 1 is not finite"),
    ([[2, 2], [1e12, 2], [20, 15]], "shape 0: point 1 (1e+12, 2) is far outside the 32x24 image"),
    ([[2, 2], ["a", 2], [20, 15]], "shape 0: point 1"),
])
def test_labelme_bad_vertices(tmp_path, points, expect):
    folder = tmp_path / "lm"
    p = labelme(folder, points)
    # json.dumps writes NaN, which Python's json reads back (labelme files in the wild have it)
    assert "NaN" in p.read_text() or "nan" not in expect
    one_line_error(invoke("data", "convert", folder, tmp_path / "out", "--to", "manifest"), "a.json", expect)
    check_lists(folder, "a.json", expect, tmp=tmp_path)


def test_labelme_nan_vertex_does_not_inflate_mask(tmp_path):
    from defectforge.data.labelme import labelme_to_mask

    p = labelme(tmp_path / "lm", [[2, 2], [12, 2], [12, 12], [2, 12]])
    assert labelme_to_mask(p).sum() == 121
    doc = json.loads(p.read_text())
    doc["shapes"][0]["points"][2] = [float("nan"), 12]
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not finite"):
        labelme_to_mask(p)


def test_check_lists_label_problems_and_still_checks_the_rest(tmp_path):
    """A broken annotation does not hide the other problems of the dataset."""
    p, _ = _coco_case(tmp_path, "orphan")
    (p.parent.parent / "images" / "train" / "b.png").write_bytes(b"not a png")
    check_lists(p.parent.parent, "b.png", "unreadable", tmp=tmp_path)
    check_lists(p.parent.parent, "image_id 7 matches no image", tmp=tmp_path)


def test_check_warns_about_unknown_split_names(tmp_path):
    root = small_manifest(tmp_path / "ds", 1, 1)
    root = root.parent
    text = (root / "split.csv").read_text().replace("images/d0.png,test", "images/d0.png,Test")
    (root / "split.csv").write_text(text)
    check_lists(root, "1 image(s) have split 'Test'", tmp=tmp_path)


@pytest.mark.parametrize("cell,expect", [('[[5, 5, 2, 9, "dent"]]', "has no area"),
                                         ('[[5, NaN, 8, 9, "dent"]]', "not finite")])
def test_manifest_boxes_must_have_area(tmp_path, cell, expect):
    image(tmp_path / "ds" / "a.png")
    manifest(tmp_path / "ds", [("a.png", "train", "dent", "", cell)], header=("file", "split", "label", "mask", "boxes"))
    one_line_error(invoke("data", "convert", tmp_path / "ds", tmp_path / "out", "--to", "coco"),
                   "split.csv", "line 2", expect)


def test_manifest_path_with_nul_byte(tmp_path):
    root = tmp_path / "ds"
    image(root / "images" / "a.png")
    manifest(root, [("images/a.png", "train", "good", ""), ("images/a\0b.png", "train", "good", "")])
    res = invoke("data", "convert", root, tmp_path / "conv", "--to", "manifest")
    one_line_error(res, "split.csv", "line 3", "NUL byte")
    check_lists(root / "split.csv", "line 3", "NUL byte", tmp=tmp_path)


def test_labelme_mask_shape_that_is_not_an_image_is_one_line(tmp_path):
    import base64

    folder = tmp_path / "lm"
    p = labelme(folder, [[2, 2], [20, 2], [20, 15]])
    doc = json.loads(p.read_text())
    doc["shapes"] = [{"label": "dent", "points": [[2, 2], [10, 10]], "shape_type": "mask",
                      "mask": base64.b64encode(b"not a png at all").decode()}]
    p.write_text(json.dumps(doc))
    one_line_error(invoke("data", "convert", folder, tmp_path / "out", "--to", "manifest"),
                   "a.json", "shape 0", "'mask' shape's base64 data is not an image")
    assert not (tmp_path / "out").exists()
