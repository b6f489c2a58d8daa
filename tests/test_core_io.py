"""Image/mask I/O, the sample type and atomic writes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from defectforge._atomic import atomic_open, atomic_write_text
from defectforge.data import Dataset, Sample, as_rgb8, read_image, read_mask, write_image, write_mask
from defectforge.data.image_io import NonBinaryMaskWarning
from defectforge.errors import InputError


def test_grey_rgb_rgba_palette_and_16bit(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((12, 17), 128, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "pal.png")
    g16 = rng.integers(0, 65536, (12, 17), dtype=np.uint16)
    write_image(tmp_path / "g16.png", g16[..., None])

    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (12, 17, 1) and np.array_equal(grey[..., 0], rgb[..., 0])
    pal = read_image(tmp_path / "pal.png")
    assert pal.shape == (12, 17, 3) and pal.dtype == np.uint8
    assert len(np.unique(pal.reshape(-1, 3), axis=0)) <= 8
    r16 = read_image(tmp_path / "g16.png")
    assert r16.dtype == np.uint16 and np.array_equal(r16[..., 0], g16)
    assert as_rgb8(r16).shape == (12, 17, 3)
    assert as_rgb8(r16)[..., 0].max() == round(int(g16.max()) * 255 / 65535)


def test_16bit_rgb_tiff_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    write_image(tmp_path / "x.tif", img)
    back = read_image(tmp_path / "x.tif")
    assert back.dtype == np.uint16 and np.array_equal(back, img)


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :5] = 255  # bright left strip
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape[:2] == (20, 10)  # displayed orientation
    assert out[:5].mean() > 200 and out[-5:].mean() < 50


def test_mask_nonbinary_warns_and_size_checked(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 2:4] = 255
    m[5, 5] = 7
    Image.fromarray(m).save(tmp_path / "m.png")
    with pytest.warns(NonBinaryMaskWarning, match="m.png"):
        out = read_mask(tmp_path / "m.png")
    assert out.sum() == 5
    Image.fromarray((m > 100).astype(np.uint8)).save(tmp_path / "b.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_mask(tmp_path / "b.png").sum() == 4  # 0/1 masks are binary
    with pytest.raises(InputError, match=r"b\.png: mask is 8x8 .* image is 9x8"):
        read_mask(tmp_path / "b.png", shape=(8, 9))


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="nope.png: file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="bad.png: unreadable or corrupt image"):
        read_image(tmp_path / "bad.png")


def test_sample_lazy_and_load_checks_mask_size(tmp_path):
    write_image(tmp_path / "i.png", np.zeros((6, 7, 3), np.uint8))
    write_mask(tmp_path / "m.png", np.ones((6, 6), bool))
    s = Sample(label="scratch", split="test", path=tmp_path / "i.png", mask_path=tmp_path / "m.png")
    assert s.is_defect and s.name == "i" and s.image.shape == (6, 7, 3)
    with pytest.raises(InputError, match="m.png: mask is 6x6"):
        s.load()
    m = np.zeros((6, 7), bool)
    m[1:3, 1:3] = True
    m[4:6, 5:7] = True
    s2 = Sample(label="scratch", image_array=np.zeros((6, 7, 3), np.uint8), mask_array=m)
    boxes = s2.derived_boxes()
    assert sorted((b.x0, b.y0, b.x1, b.y1) for b in boxes) == [(1, 1, 3, 3), (5, 4, 7, 6)]
    ds = Dataset([s, s2, Sample(split="test")])
    assert ds.counts() == {"test/good": 1, "test/scratch": 1, "train/scratch": 1}
    assert len(ds.filter(defect=True)) == 2 and len(ds.filter(split="test", label="good")) == 1


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as fh:
            fh.write("new partial")
            raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_header_size_agrees_with_read_image_on_exif_orientation(tmp_path, suffix):
    from defectforge.data._files import header_size

    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / f"o{suffix}", exif=exif)
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / f"plain{suffix}")
    assert header_size(tmp_path / f"o{suffix}") == read_image(tmp_path / f"o{suffix}").shape[:2] == (20, 10)
    assert header_size(tmp_path / f"plain{suffix}") == (10, 20)
