"""labelme -> mask: exact on every BSData pair; shapes; folder reading; bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from defectforge.data import labelme_to_mask, load_dataset, read_labelme_folder, read_mask, write_image
from defectforge.errors import InputError


def test_reproduces_every_bsdata_mask_exactly(bsdata_dir):
    """BSData's masks were rasterised like labelme does (PIL polygon, fill + outline)."""
    jsons = sorted((bsdata_dir / "labelme").glob("*.json"))
    masks = sorted((bsdata_dir / "masks").glob("*.png"))
    assert len(jsons) == len(masks) == 167
    assert [p.stem for p in jsons] == [p.stem for p in masks]
    for j, mp in zip(jsons, masks):
        want = read_mask(mp)
        got = labelme_to_mask(j)
        assert got.shape == want.shape == (460, 1130)
        n_diff = int((got != want).sum())
        assert n_diff == 0, f"{j.name}: {n_diff} pixels differ"


def test_bsdata_labelme_folder_labels(bsdata_dir):
    ds = read_labelme_folder(bsdata_dir / "labelme", include_unlabelled=False)
    assert len(ds) == 167 and ds.labels == ["pitting"]  # "Pitting" lower-cased
    assert all(s.path is not None and s.path.parent.name == "images" for s in ds)
    assert load_dataset(bsdata_dir / "labelme").format == "labelme"


def _write_json(path, shapes, w=20, h=10, image="img.png"):
    path.write_text(json.dumps({"version": "5.0.0", "flags": {}, "shapes": shapes, "imagePath": image,
                                "imageData": None, "imageHeight": h, "imageWidth": w}))
    return path


def test_shapes_rectangle_circle_polygon(tmp_path):
    shapes = [
        {"label": "Scratch", "shape_type": "rectangle", "points": [[12, 6], [2, 1]]},
        {"label": "Scratch", "shape_type": "circle", "points": [[15, 5], [15, 7]]},
        {"label": "Dent", "shape_type": "polygon", "points": [[0, 9], [1, 9], [1, 8]]},
    ]
    j = _write_json(tmp_path / "img.json", shapes)
    m = labelme_to_mask(j)
    assert m.shape == (10, 20)
    assert m[1:7, 2:13].all() and not m[0, 2] and not m[1, 1] and not m[7, 5]  # rectangle incl. both corners
    assert m[5, 17] and m[3, 15] and m[7, 15] and not m[5, 18]  # circle radius 2 around (15, 5)
    assert m[9, 0] and m[8, 1]
    only_dent = labelme_to_mask(j, labels={"dent"})
    assert only_dent.sum() == 3
    write_image(tmp_path / "img.png", np.zeros((10, 20, 3), np.uint8))
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(tmp_path / "other.png")  # unlabelled -> good
    ds = read_labelme_folder(tmp_path, split="test")
    assert [(s.name, s.label, s.split) for s in ds] == [("img", "scratch", "test"), ("other", "good", "test")]
    assert np.array_equal(ds[0].mask, m) and ds[1].mask is None


def test_embedded_image_data_is_used_when_the_file_is_missing(tmp_path):
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((10, 20), 77, np.uint8)).save(buf, format="PNG")
    j = _write_json(tmp_path / "x.json", [{"label": "a", "shape_type": "polygon",
                                           "points": [[1, 1], [5, 1], [5, 5]]}], image="missing.png")
    d = json.loads(j.read_text())
    d["imageData"] = base64.b64encode(buf.getvalue()).decode()
    j.write_text(json.dumps(d))
    ds = read_labelme_folder(tmp_path)
    assert ds[0].path is None and ds[0].image.shape == (10, 20, 1) and int(ds[0].image[0, 0, 0]) == 77


def test_bad_labelme_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"shapes": [')
    with pytest.raises(InputError, match=r"bad\.json: malformed JSON at line 1"):
        labelme_to_mask(bad)
    bad.write_text('{"images": []}')
    with pytest.raises(InputError, match=r"bad\.json: not a labelme file"):
        labelme_to_mask(bad)
    j = _write_json(tmp_path / "s.json", [{"label": "a", "shape_type": "hexagon", "points": [[1, 1]]}])
    with pytest.raises(InputError, match=r"s\.json: shape 0: cannot rasterise .*hexagon"):
        labelme_to_mask(j)
    with pytest.raises(InputError, match=r"missing\.json: file not found"):
        labelme_to_mask(tmp_path / "missing.json")
