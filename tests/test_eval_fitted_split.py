"""``detect eval`` refuses to score the images a model was fitted on (a memory bank calls its own
images normal: AUROC near 1.0 that means nothing) unless ``--allow-train-split`` is given."""

from __future__ import annotations

import json

import pytest
from badinput_kit import fit_tiny_model, image, invoke, manifest, mask, one_line_error, small_manifest

from defectforge.detect.base import load_detector
from defectforge.detect.fitted import FITTED_KEY, fitted_overlap, image_key


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fitted")
    model = fit_tiny_model(folder)
    root = folder / "train"
    # two defect images added to the train split after the fit: the split now mixes fitted and new images
    rows = [(f"images/g{i}.png", "train", "good", "") for i in range(4)]
    for i in range(2):
        image(root / "images" / f"n{i}.png", seed=50 + i)
        mask(root / "masks" / f"n{i}.png")
        rows.append((f"images/n{i}.png", "train", "dent", f"masks/n{i}.png"))
    manifest(root, rows)
    return model, root


def test_model_file_records_the_fitted_images(fitted):
    model, root = fitted
    keys = load_detector(model).fit_info_[FITTED_KEY]
    assert len(keys) == 4 and image_key(root / "images" / "g0.png") in keys
    assert image_key(root / "images" / "n0.png") not in keys


def test_eval_on_the_fitted_split_is_refused(fitted, tmp_path):
    model, root = fitted
    js = tmp_path / "m.json"
    res = invoke("detect", "eval", model, root, "--split", "train", "--json", js)
    one_line_error(res, str(root), "4 of the 6 images of split 'train'", "--allow-train-split")
    assert not js.exists()


def test_allow_train_split_evaluates_with_a_warning(fitted, tmp_path):
    model, root = fitted
    js = tmp_path / "m.json"
    res = invoke("detect", "eval", model, root, "--split", "train", "--json", js, "--allow-train-split")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "fitted on" in res.output
    assert json.loads(js.read_text())["fitted_images_evaluated"] == {str(model): 4}


def test_held_out_images_are_not_refused(fitted, tmp_path):
    model, _ = fitted
    other = small_manifest(tmp_path / "other").parent
    res = invoke("detect", "eval", model, other, "--json", tmp_path / "m.json")
    assert res.exit_code == 0, res.output
    assert "fitted on" not in res.output


def test_older_model_files_fall_back_to_their_real_defect_set(tmp_path):
    info = {"defect_sets": [{"name": f"real:{tmp_path}", "images": 2}]}
    assert fitted_overlap(info, ["a", "b"], tmp_path, "train") == (2, "a")
    assert fitted_overlap(info, ["a"], tmp_path, "test") is None
    assert fitted_overlap({}, ["a"], tmp_path, "train") is None
