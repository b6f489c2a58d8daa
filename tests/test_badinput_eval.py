"""Issue 18 item 6: ``detect eval`` refuses labels that would silently skew its metrics (a wrong
mask size, an empty mask on a defect image, a duplicated row, a misspelt split, missing masks)
instead of resizing, dropping or reporting ``nan`` with exit code 0."""

from __future__ import annotations

import json
import math

import pytest
from badinput_kit import fit_tiny_model, image, invoke, manifest, mask, one_line_error, small_manifest

from defectforge.errors import InputError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return fit_tiny_model(tmp_path_factory.mktemp("evalmodel"))


def _eval(model, root, tmp_path, *extra):
    js = tmp_path / "metrics.json"
    return invoke("detect", "eval", model, root, "--json", js, *extra), js


def test_valid_eval_has_finite_metrics(model, tmp_path):
    root = small_manifest(tmp_path / "ds").parent
    res, js = _eval(model, root, tmp_path)
    assert res.exit_code == 0, res.output
    m = json.loads(js.read_text())
    assert m["n_images"] == 4 and 0 <= m["pixel_auroc"] <= 1 and 0 <= m["image_auroc"] <= 1


def test_wrong_size_mask_refused_not_resized(model, tmp_path):
    root = small_manifest(tmp_path / "ds").parent
    mask(root / "masks" / "d1.png", box=(1, 1, 5, 5), hw=(10, 10))
    res, js = _eval(model, root, tmp_path)
    one_line_error(res, "d1.png", "mask is 10x10 (WxH) but the image is 32x24")
    assert not js.exists()


def test_empty_mask_on_defect_image_refused(model, tmp_path):
    root = small_manifest(tmp_path / "ds").parent
    mask(root / "masks" / "d0.png", box=None)
    one_line_error(_eval(model, root, tmp_path)[0], "d0.png", "defect image (dent) has an empty mask")


def test_duplicated_row_refused(model, tmp_path):
    root = small_manifest(tmp_path / "ds").parent
    with open(root / "split.csv", "a") as fh:
        fh.write("images/d0.png,test,dent,masks/d0.png\n")
    one_line_error(_eval(model, root, tmp_path)[0], "d0.png", "listed twice")


def test_misspelt_split_refused(model, tmp_path):
    root = small_manifest(tmp_path / "ds").parent
    with open(root / "split.csv", "a") as fh:
        image(root / "images" / "x.png", seed=50)
        mask(root / "masks" / "x.png")
        fh.write("images/x.png,Test,dent,masks/x.png\n")
    one_line_error(_eval(model, root, tmp_path)[0], "split.csv", "1 image(s) have split 'Test'", "'test'")


def test_unknown_split_option_refused(model, tmp_path):
    root = small_manifest(tmp_path / "ds").parent
    one_line_error(_eval(model, root, tmp_path, "--split", "Test")[0], "no images in split 'Test'",
                   "splits are: test")


def test_manifest_without_mask_column_refused_or_image_only(model, tmp_path):
    root = tmp_path / "ds"
    rows = []
    for i in range(2):
        image(root / f"g{i}.png", seed=i)
        image(root / f"d{i}.png", seed=10 + i)
        rows += [(f"g{i}.png", "test", "good"), (f"d{i}.png", "test", "dent")]
    manifest(root, rows, header=("file", "split", "label"))
    res, js = _eval(model, root, tmp_path)
    one_line_error(res, "no defect image", "has a mask", "--image-only")
    res, js = _eval(model, root, tmp_path, "--image-only")
    assert res.exit_code == 0, res.output
    m = json.loads(js.read_text())
    assert m["pixel_auroc"] is None and m["aupro"] is None and m["pixel_metrics"] == "not computed (--image-only)"
    assert isinstance(m["image_auroc"], float) and math.isfinite(m["image_auroc"])


def test_some_defect_images_without_mask_refused(model, tmp_path):
    root = small_manifest(tmp_path / "ds").parent
    with open(root / "split.csv", "a") as fh:
        image(root / "images" / "x.png", seed=50)
        fh.write("images/x.png,test,dent,\n")
    one_line_error(_eval(model, root, tmp_path)[0], "x.png", "defect image (dent) has no mask")


def test_validate_is_a_separate_step(tmp_path):
    """The checks are one function (usable by a streaming evaluator) over the samples."""
    from defectforge.data import load_dataset
    from defectforge.detect.evaluate import validate_eval_samples

    root = small_manifest(tmp_path / "ds").parent
    ds = load_dataset(root)
    assert len(validate_eval_samples(ds, "test")) == 4
    mask(root / "masks" / "d0.png", box=None)
    with pytest.raises(InputError, match="empty mask"):
        validate_eval_samples(ds, "test")
