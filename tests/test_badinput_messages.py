"""Errors name the file that is wrong: the target of an output (not its temporary file), the
texture folder (not the host image), a COCO file_name that is not a string, the model file
with a bad setting, a missing --image before any VLM call."""

from __future__ import annotations

import pytest
import torch
from badinput_kit import coco, image, invoke, one_line_error

from defectforge._atomic import atomic_write_json
from defectforge.data import Sample, load_dataset
from defectforge.errors import InputError


def test_output_that_is_a_folder_is_named(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=r"out: is a folder, not a file") as e:
        atomic_write_json(tmp_path / "out", {"a": 1})
    assert e.value.path == tmp_path / "out"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary file left
    one_line_error(invoke("diffusion", "prompts", "pitting", "-o", tmp_path / "out"), str(tmp_path / "out"),
                   "is a folder")


def test_coco_file_name_must_be_a_string(tmp_path):
    image(tmp_path / "co" / "images" / "train" / "12345")
    p = coco(tmp_path / "co", [{"id": 1, "file_name": 12345, "width": 32, "height": 24}], [])
    with pytest.raises(InputError, match=r"instances_train.json: image 1: file_name 12345 is not a file name"):
        load_dataset(tmp_path / "co")
    assert p.is_file()


def test_texture_folder_error_names_the_folder_not_the_host(tmp_path):
    from defectforge.synth2d.engine import generate_samples

    goods = [Sample(path=image(tmp_path / f"g{i}.png", seed=i, hw=(160, 200))) for i in range(2)]
    missing = tmp_path / "no_textures"
    with pytest.raises(InputError) as e:
        generate_samples(goods, "texture", 1, source="folder", folder=str(missing))
    assert str(e.value).startswith(f"{missing}: texture folder not found"), str(e.value)


def test_missing_vlm_image_is_an_error_before_any_call(tmp_path):
    from defectforge.prompts.vlm import build_prompts, load_vlm_config

    class NeverCalled:
        def complete_json(self, messages, schema_model):
            raise AssertionError("the VLM was called")

    cfg = load_vlm_config({"base_url": "http://127.0.0.1:9/v1", "model": "x", "images": [str(tmp_path / "no.jpg")]})
    with pytest.raises(InputError, match=r"no\.jpg: file not found"):
        build_prompts("pitting", cfg, client=NeverCalled())
    one_line_error(invoke("diffusion", "prompts", "pitting", "--image", tmp_path / "no.jpg",
                          "--vlm-url", "http://127.0.0.1:9/v1", "--vlm-model", "x"), str(tmp_path / "no.jpg"))


def test_model_file_with_an_unknown_backbone_is_named(tmp_path):
    from badinput_kit import fit_tiny_model

    model = fit_tiny_model(tmp_path)
    obj = torch.load(model, weights_only=True)
    obj["params"]["backbone"] = "nosuch_backbone_xyz"
    bad = tmp_path / "bad.dfm"
    torch.save(obj, bad)
    one_line_error(invoke("detect", "predict", bad, tmp_path / "train" / "images", "-o", tmp_path / "p"),
                   str(bad), "unknown backbone 'nosuch_backbone_xyz'")
