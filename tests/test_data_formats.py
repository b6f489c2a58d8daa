"""Readers/writers round trips (MVTec, manifest, YOLO, COCO, labelme), RLE, polygons and
format detection, on small synthetic data built in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_data_helpers import H, W, blob_mask, by_key, make_dataset, tree_digest

from defectforge.data import (Box, Dataset, Sample, detect_format, export_manifest, load_dataset, read_coco,
                              read_manifest, read_mvtec, read_yolo, write_coco, write_image, write_labelme,
                              write_manifest, write_mask, write_mvtec, write_yolo)
from defectforge.data.labelme import read_labelme_folder
from defectforge.data.polygons import mask_to_polygons, polygons_to_mask
from defectforge.data.rle import counts_to_string, decode_rle, encode_rle, rle_counts, string_to_counts
from defectforge.errors import InputError


@pytest.fixture
def synth(tmp_path):
    return make_dataset(tmp_path)


def _same_pixels(a: Dataset, b: Dataset, masks: bool = True) -> None:
    ka, kb = by_key(a), by_key(b)
    assert ka.keys() == kb.keys()
    for k, s in ka.items():
        t = kb[k]
        assert np.array_equal(s.image, t.image), k
        assert s.image.dtype == t.image.dtype
        if masks:
            if s.is_defect:
                assert t.mask is not None, k
                assert np.array_equal(s.mask, t.mask), (k, int((s.mask != t.mask).sum()))
            else:
                assert t.mask is None or not t.mask.any()


def _mvtec_counts(ds: Dataset) -> dict[str, int]:
    """What an MVTec export holds: train defects and all val images move to test/."""
    from collections import Counter

    from defectforge.data.mvtec import mvtec_place

    return dict(Counter("/".join(mvtec_place(s)) for s in ds))


def test_mvtec_roundtrip(synth, tmp_path):
    before = tree_digest(synth.root)
    out = write_mvtec(synth, tmp_path / "mv")
    assert (out / "train" / "good").is_dir() and (out / "ground_truth" / "dent").is_dir()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["good"]  # defects only under test/
    assert sorted(p.name for p in (out / "ground_truth" / "scratch").iterdir()) == ["d1.png", "d2.png"]
    back = read_mvtec(out)
    assert back.format == "mvtec"
    assert back.counts() == _mvtec_counts(synth) == {"train/good": 3, "test/good": 1, "test/scratch": 2,
                                                      "test/dent": 2}
    kb = {(s.label, s.name): s for s in back}
    for s in synth:  # pixels and masks survive, whatever split they moved to
        t = kb[(s.label, s.name)]
        assert np.array_equal(s.image, t.image) and s.image.dtype == t.image.dtype
        if s.is_defect:
            assert np.array_equal(s.mask, t.mask)
    assert (out / "test" / "dent" / "d4.png").read_bytes() == (synth.root / "d4.png").read_bytes()
    assert not (out / "test" / "dent" / "d3.jpg").exists()  # JPEG -> PNG of the decoded pixels
    assert tree_digest(synth.root) == before  # source untouched
    with pytest.raises(InputError, match="not empty"):
        write_mvtec(synth, out)
    write_mvtec(synth, out, overwrite=True)
    assert read_mvtec(out).counts() == _mvtec_counts(synth)


def test_mvtec_mask_pairing_val_and_missing(tmp_path):
    root = tmp_path / "mv"
    img = np.zeros((8, 8, 3), np.uint8)
    m = np.zeros((8, 8), bool)
    m[2:4, 2:5] = True
    write_image(root / "train" / "good" / "a.png", img)
    write_image(root / "val" / "crack" / "v1.png", img)
    write_image(root / "test" / "crack" / "t1.png", img)
    write_image(root / "test" / "crack" / "t2.png", img)  # no mask
    write_mask(root / "ground_truth" / "crack" / "t1.png", m)  # "<stem>.png" naming
    write_mask(root / "ground_truth" / "crack" / "v1_mask.png", m)
    ds = read_mvtec(root)
    assert ds.counts() == {"train/good": 1, "test/crack": 2, "val/crack": 1}
    got = {s.name: s for s in ds}
    assert got["t1"].mask_path.name == "t1.png" and got["v1"].mask_path.name == "v1_mask.png"
    assert got["t2"].mask_path is None
    assert np.array_equal(got["t1"].mask, m)


def test_manifest_roundtrip_keeps_extra_columns_and_boxes(synth, tmp_path):
    for i, s in enumerate(synth):
        s.meta.update({"group": f"g{i % 2}", "width": str(W)})
    out = export_manifest(synth, tmp_path / "man")
    back = read_manifest(out / "split.csv")
    assert back.counts() == synth.counts()
    _same_pixels(synth, back)
    assert [s.meta["group"] for s in back] == [s.meta["group"] for s in synth]
    header = (out / "split.csv").read_text().splitlines()[0]
    assert header == "file,split,label,mask,group,width"

    # write_manifest lists existing files relative to the CSV
    csv_path = synth.root / "list.csv"
    write_manifest(synth, csv_path)
    assert "\nd1.png,train,scratch,d1_m.png," in (synth.root / "list.csv").read_text()
    again = read_manifest(csv_path)
    assert [s.path for s in again] == [s.path for s in synth]

    # detection-only samples keep their boxes in a 'boxes' column
    boxes_ds = Dataset([Sample("dent", "test", synth[0].path, boxes=[Box(1, 2, 5, 7, "dent")]),
                        Sample("good", "train", synth[1].path)])
    write_manifest(boxes_ds, tmp_path / "b.csv")
    rb = read_manifest(tmp_path / "b.csv")
    assert rb[0].boxes == [Box(1.0, 2.0, 5.0, 7.0, "dent")] and rb[1].boxes is None


def test_manifest_in_memory_samples_need_export(tmp_path):
    ds = Dataset([Sample("dent", "train", image_array=np.zeros((4, 5, 1), np.uint16),
                         mask_array=np.eye(4, 5, dtype=bool), meta={"name": "mem"})])
    with pytest.raises(InputError, match="no file"):
        write_manifest(ds, tmp_path / "x.csv")
    out = export_manifest(ds, tmp_path / "m")
    back = read_manifest(out)
    assert back[0].image.dtype == np.uint16 and np.array_equal(back[0].mask, np.eye(4, 5, dtype=bool))


@pytest.mark.parametrize("text, match", [
    ("file,label\na.png,good\n", r"line 1: missing required column\(s\) split"),
    ("file,split,label,mask\na.png,train,good,\nb.png,train\n", r"line 3: 2 cells but the header has 4"),
    ("file,split,label,mask\na.png,,good,\n", r"line 2: empty 'split'"),
    ("", "empty file"),
    ("file,split,label,boxes\na.png,test,dent,\"[[1,2]\"\n", "line 2: malformed 'boxes'"),
])
def test_manifest_malformed(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=r"bad\.csv: " + match):
        read_manifest(p)


def test_yolo_segment_roundtrip(synth, tmp_path):
    out = write_yolo(synth, tmp_path / "y", mode="segment")
    assert (out / "labels" / "train" / "g1.txt").read_text() == ""  # good -> empty file
    spec = (out / "data.yaml").read_text()
    assert "names:" in spec and "- dent" in spec and "- scratch" in spec
    back = read_yolo(out)
    assert back.counts() == synth.counts()
    _same_pixels(synth, back)  # hole-free masks survive polygons exactly
    for k, s in by_key(synth).items():
        t = by_key(back)[k]
        if s.is_defect:
            assert sorted(b.xywh() for b in t.boxes) == sorted(b.xywh() for b in s.derived_boxes())


def test_yolo_detect_roundtrip_and_boxes_only(synth, tmp_path):
    out = write_yolo(synth, tmp_path / "y", mode="detect")
    line = (out / "labels" / "train" / "d1.txt").read_text().splitlines()
    assert len(line) == 2 and all(len(x.split()) == 5 for x in line)  # 2 components -> 2 boxes
    back = read_yolo(out)
    assert back.counts() == synth.counts()
    kb = by_key(back)
    for k, s in by_key(synth).items():
        t = kb[k]
        assert t.mask is None  # boxes only
        want = sorted(b.xywh() for b in s.derived_boxes())
        got = sorted(t.boxes or [], key=lambda b: b.xywh())
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.allclose(g.xywh(), w, atol=1e-3)
            assert g.label == s.label
    # and again: detect from boxes-only samples
    again = read_yolo(write_yolo(back, tmp_path / "y2", mode="detect"))
    assert [len(s.boxes or []) for s in again] == [len(s.boxes or []) for s in back]


def test_yolo_reads_dict_names_and_rejects_bad_lines(tmp_path):
    root = tmp_path / "y"
    write_image(root / "images" / "val" / "a.png", np.zeros((10, 20, 3), np.uint8))
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "a.txt").write_text("3 0.5 0.5 0.5 0.2\n")
    (root / "data.yaml").write_text("names:\n  3: Crack\n")
    ds = read_yolo(root)
    assert ds[0].label == "crack" and ds[0].split == "val"
    assert ds[0].boxes[0].xywh() == pytest.approx((5.0, 4.0, 10.0, 2.0))
    (root / "labels" / "val" / "a.txt").write_text("0 0.1 0.2 0.3\n")
    with pytest.raises(InputError, match=r"a\.txt: line 1: expected"):
        read_yolo(root)


@pytest.mark.parametrize("mode", ["rle", "polygon"])
def test_coco_roundtrip(synth, tmp_path, mode):
    out = write_coco(synth, tmp_path / "c", mode=mode)
    doc = json.loads((out / "annotations" / "instances_test.json").read_text())
    assert {c["name"] for c in doc["categories"]} == {"dent", "scratch"}
    n_components = sum(len(s.derived_boxes()) for s in synth.filter(split="test", defect=True))
    assert len(doc["annotations"]) == n_components
    seg = doc["annotations"][0]["segmentation"]
    assert isinstance(seg, dict) if mode == "rle" else isinstance(seg, list)
    back = read_coco(out)
    assert back.format == "coco" and back.counts() == synth.counts()
    _same_pixels(synth, back)
    for k, s in by_key(synth).items():
        if s.is_defect:
            assert sorted(b.xywh() for b in by_key(back)[k].boxes) == sorted(b.xywh() for b in s.derived_boxes())


def test_coco_rle_keeps_holes_polygon_fills_them(tmp_path):
    ring = blob_mask("ring")
    ds = Dataset([Sample("dent", "train", image_array=np.zeros((H, W, 3), np.uint8), mask_array=ring,
                         meta={"name": "r"})])
    rle = read_coco(write_coco(ds, tmp_path / "r", mode="rle"))
    assert np.array_equal(rle[0].mask, ring)
    poly = read_coco(write_coco(ds, tmp_path / "p", mode="polygon"))
    from scipy.ndimage import binary_fill_holes

    assert np.array_equal(poly[0].mask, binary_fill_holes(ring))


def test_coco_reads_uncompressed_rle_bbox_only_and_good(tmp_path):
    root = tmp_path / "c"
    write_image(root / "a.png", np.zeros((6, 5, 3), np.uint8))
    write_image(root / "b.png", np.zeros((6, 5, 3), np.uint8))
    write_image(root / "c.png", np.zeros((6, 5, 3), np.uint8))
    m = np.zeros((6, 5), bool)
    m[1:3, 2:4] = True
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 5, "height": 6},
                      {"id": 2, "file_name": "b.png", "width": 5, "height": 6},
                      {"id": 3, "file_name": "c.png", "width": 5, "height": 6}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 1,
                            "segmentation": {"size": [6, 5], "counts": rle_counts(m)}},
                           {"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 1, 2, 3]}],
           "categories": [{"id": 7, "name": "Hole"}]}
    (root / "val.json").write_text(json.dumps(doc))
    ds = read_coco(root / "val.json")
    assert [s.label for s in ds] == ["hole", "hole", "good"] and {s.split for s in ds} == {"val"}
    assert np.array_equal(ds[0].mask, m) and ds[0].boxes[0].xywh() == (2.0, 1.0, 2.0, 2.0)
    assert ds[1].mask is None and ds[1].boxes[0].xywh() == (1.0, 1.0, 2.0, 3.0)


def test_labelme_writer_roundtrip(synth, tmp_path):
    out = write_labelme(synth, tmp_path / "lm")
    back = read_labelme_folder(out)
    assert sorted((s.label, s.name) for s in back) == sorted((s.label, s.name) for s in synth)
    kb = {s.name: s for s in back}
    for s in synth:
        if s.is_defect:
            assert np.array_equal(kb[s.name].mask, s.mask)


def test_rle_known_values_and_roundtrip():
    m = np.array([[0, 1], [1, 1]], bool)  # column-major: 0,1,1,1
    assert rle_counts(m) == [1, 3]
    assert encode_rle(m) == {"size": [2, 2], "counts": "13"}
    assert rle_counts(np.ones((2, 2), bool)) == [0, 4]  # starts with an empty run of zeros
    # deltas from the 4th count on, including negative ones and multi-character values
    counts = [0, 100, 2, 1, 5000, 3, 7, 1]
    assert string_to_counts(counts_to_string(counts)) == counts
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 3), (40, 61)]:
        for p in (0.0, 0.05, 0.5, 1.0):
            mk = rng.random(shape) < p
            for compressed in (True, False):
                assert np.array_equal(decode_rle(encode_rle(mk, compressed)), mk)


def test_rle_matches_pycocotools_if_available():
    mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools not installed (optional cross-check)")
    rng = np.random.default_rng(5)
    mk = rng.random((23, 31)) < 0.3
    ref = mask_util.encode(np.asfortranarray(mk.astype(np.uint8)))
    assert encode_rle(mk)["counts"] == ref["counts"].decode()


def test_polygons_exact_for_hole_free_components():
    from scipy.ndimage import binary_fill_holes, binary_opening

    rng = np.random.default_rng(11)
    for _ in range(30):
        m = binary_fill_holes(binary_opening(rng.random((30, 40)) < 0.45))
        assert np.array_equal(polygons_to_mask(mask_to_polygons(m), m.shape), m)


def test_detect_format_and_load(synth, tmp_path):
    assert detect_format(write_mvtec(synth, tmp_path / "a")) == "mvtec"
    assert detect_format(export_manifest(synth, tmp_path / "b")) == "manifest"
    assert detect_format(tmp_path / "b" / "split.csv") == "manifest"
    assert detect_format(write_yolo(synth, tmp_path / "c")) == "yolo"
    assert detect_format(write_coco(synth, tmp_path / "d")) == "coco"
    assert detect_format(tmp_path / "d" / "annotations" / "instances_train.json") == "coco"
    assert detect_format(write_labelme(synth, tmp_path / "e")) == "labelme"
    assert load_dataset(tmp_path / "a").counts() == _mvtec_counts(synth)
    for name in "bcd":
        assert load_dataset(tmp_path / name).counts() == synth.counts()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"junk: unknown dataset layout; looked for .*manifest.*COCO.*labelme.*YOLO.*MVTec"):
        detect_format(tmp_path / "junk")
    with pytest.raises(InputError, match="nowhere: path not found"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text('{"images": [')
    with pytest.raises(InputError, match=r"bad\.json: malformed JSON at line 1"):
        detect_format(tmp_path / "bad.json")


def test_coco_rle_per_component_equals_whole_image_encoding(tmp_path):
    """The writer encodes each component from its box; the result must equal encoding the
    full-size component mask (and decode back to exactly that component)."""
    from defectforge.data import write_coco
    from defectforge.data.polygons import component_masks
    from defectforge.data.rle import counts_from_indices

    rng = np.random.default_rng(3)
    mask = rng.random((37, 53)) < 0.08  # many small 8-connected components, some touching borders
    mask[0, :5] = mask[-1, -4:] = mask[:, 0] = True
    ds = Dataset([Sample(label="pit", split="test", image_array=np.zeros((37, 53, 3), np.uint8), mask_array=mask)])
    dst = write_coco(ds, tmp_path / "coco", mode="rle")
    doc = json.loads(next((dst / "annotations").glob("*.json")).read_text())
    comps = component_masks(mask)
    anns = doc["annotations"]
    assert len(anns) == len(comps) > 10
    for ann, comp in zip(anns, comps):
        assert ann["segmentation"] == encode_rle(comp)
        assert np.array_equal(decode_rle(ann["segmentation"]), comp)
        ys, xs = np.nonzero(comp)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == comp.sum()
    for m in (np.zeros((4, 5), bool), np.ones((4, 5), bool)):
        assert counts_from_indices(np.flatnonzero(m.ravel(order="F")), m.size) == rle_counts(m)
