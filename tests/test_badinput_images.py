"""Issue 18 items 8, 9 and 11: decompression bombs, images over the pixel limit and corrupt
images, in every command that reads images: one line ``error: <file>: <problem>`` (exit 2) or a
``data check`` problem (exit 1), never a traceback, minutes of decoding or a copied bad file."""

from __future__ import annotations

import pytest
from badinput_kit import check_lists, fit_tiny_model, image, invoke, one_line_error, png_claiming, small_manifest

from defectforge.data import load_dataset, read_image
from defectforge.data._files import header_size
from defectforge.errors import InputError


def _dataset_with(tmp_path, bad: str):
    root = small_manifest(tmp_path / "ds", 3, 2, split="train").parent
    if bad == "bomb":  # over PIL's own limit: DecompressionBombError
        png_claiming(root / "images" / "g1.png", 100_000, 100_000)
    elif bad == "huge":  # under PIL's limit (81 Mpx) but over ours: minutes of decoding
        png_claiming(root / "images" / "g1.png", 9000, 9000)
    elif bad == "corrupt":
        (root / "images" / "g1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)
    return root, root / "images" / "g1.png"


EXPECT = {"bomb": "decompression bomb", "huge": "over the limit", "corrupt": "unreadable or corrupt image"}


@pytest.mark.parametrize("bad", ["bomb", "huge"])
def test_read_image_refuses_before_decoding(tmp_path, bad):
    _, p = _dataset_with(tmp_path, bad)
    with pytest.raises(InputError, match=EXPECT[bad]):
        read_image(p)
    with pytest.raises(InputError, match=EXPECT[bad]):
        header_size(p)


def test_max_pixels_is_configurable(tmp_path, monkeypatch):
    p = image(tmp_path / "a.png")  # 32x24 = 768 pixels
    monkeypatch.setenv("DEFECTFORGE_MAX_PIXELS", "500")
    with pytest.raises(InputError, match=r"a.png: image is 32x24 = 768 pixels, over the limit of 500"):
        read_image(p)
    monkeypatch.setenv("DEFECTFORGE_MAX_PIXELS", "768")
    assert read_image(p).shape == (24, 32, 3)
    monkeypatch.setenv("DEFECTFORGE_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="DEFECTFORGE_MAX_PIXELS"):
        read_image(p)


@pytest.mark.parametrize("bad", ["bomb", "huge", "corrupt"])
def test_data_check_lists_bad_images(tmp_path, bad):
    root, p = _dataset_with(tmp_path, bad)
    check_lists(root, "g1.png", EXPECT[bad], tmp=tmp_path)


@pytest.mark.parametrize("to", ["manifest", "yolo", "coco", "mvtec"])
@pytest.mark.parametrize("bad", ["bomb", "huge", "corrupt"])
def test_data_convert_refuses_bad_images(tmp_path, bad, to):
    """Item 11: convert copied corrupt images and bombs byte for byte with exit 0."""
    root, p = _dataset_with(tmp_path, bad)
    one_line_error(invoke("data", "convert", root, tmp_path / "out", "--to", to), "g1.png", EXPECT[bad])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["bomb", "huge"])
def test_synth_refuses_bad_base_image(tmp_path, bad):
    root, p = _dataset_with(tmp_path, bad)
    res = invoke("synth", root, "--generator", "pitting", "--n", "2", "--out", tmp_path / "s", "--workers", "1")
    one_line_error(res, "g1.png", EXPECT[bad])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return fit_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("bad", ["bomb", "huge", "corrupt"])
def test_detect_predict_refuses_bad_image(tmp_path, model, bad):
    _, p = _dataset_with(tmp_path, bad)
    one_line_error(invoke("detect", "predict", model, p, "--out", tmp_path / "pred"), "g1.png", EXPECT[bad])


@pytest.mark.parametrize("bad", ["bomb", "huge"])
def test_detect_fit_and_eval_refuse_bad_image(tmp_path, model, bad):
    root, p = _dataset_with(tmp_path, bad)
    one_line_error(invoke("detect", "fit", root, "--out", tmp_path / "m2.dfm", "--random-init",
                          "--image-size", "32x32"), "g1.png", EXPECT[bad])
    ds = load_dataset(root)
    assert len(ds) == 5
