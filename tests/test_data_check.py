"""``check_dataset`` problems, the ``defectforge data`` CLI (check, convert, errors) and the
bundled BSData sample."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from test_data_helpers import blob_mask, by_key, make_dataset, tree_digest
from typer.testing import CliRunner

from defectforge.cli import app
from defectforge.data import check_dataset, load_dataset, read_mask, write_image, write_mask
from defectforge.datasets import load_sample, sample_path

runner = CliRunner()


def _broken_manifest(tmp_path):
    """One of each problem, listed in a manifest."""
    rng = np.random.default_rng(0)
    d = tmp_path / "broken"
    img = lambda: rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # noqa: E731
    write_image(d / "ok.png", img())
    write_image(d / "ok_defect.png", img())
    m = np.zeros((12, 16), bool)
    m[3:6, 4:9] = True
    write_mask(d / "ok_defect_mask.png", m)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    write_image(d / "wrong_size.png", img())
    write_mask(d / "wrong_size_mask.png", np.ones((5, 5), bool))
    write_image(d / "empty.png", img())
    write_mask(d / "empty_mask.png", np.zeros((12, 16), bool))
    write_image(d / "nomask.png", img())
    shutil.copyfile(d / "ok.png", d / "dup.png")
    write_image(d / "goodmask.png", img())
    write_mask(d / "goodmask_mask.png", m)
    rows = [
        ("ok.png", "train", "good", ""),
        ("ok_defect.png", "test", "dent", "ok_defect_mask.png"),
        ("corrupt.png", "train", "good", ""),
        ("wrong_size.png", "test", "dent", "wrong_size_mask.png"),
        ("empty.png", "test", "dent", "empty_mask.png"),
        ("nomask.png", "test", "dent", ""),
        ("dup.png", "test", "good", ""),
        ("ok.png", "test", "good", ""),  # listed twice
        ("goodmask.png", "test", "good", "goodmask_mask.png"),
        ("gone.png", "test", "good", ""),
    ]
    with open(d / "split.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "split", "label", "mask"])
        w.writerows(rows)
    return d


def test_check_finds_each_problem(tmp_path):
    d = _broken_manifest(tmp_path)
    rep = check_dataset(d)
    found = {(pr["kind"], pr["file"].rsplit("/", 1)[-1]) for pr in rep.problems}
    assert found == {
        ("unreadable", "corrupt.png"),
        ("size mismatch", "wrong_size_mask.png"),
        ("empty mask", "empty_mask.png"),
        ("missing mask", "nomask.png"),
        ("duplicate", "dup.png"),
        ("listed twice", "ok.png"),
        ("mask on good image", "goodmask_mask.png"),
        ("unreadable", "gone.png"),
    }
    sev = {pr["kind"]: pr["severity"] for pr in rep.problems}
    assert sev["mask on good image"] == "warning" and sev["duplicate"] == "error"
    dup = next(pr for pr in rep.problems if pr["kind"] == "duplicate")
    assert dup["problem"].endswith("ok.png")
    assert rep.counts["test/dent"] == 4 and rep.n_images == 10
    assert rep.mask_stats["dent"]["n"] == 1
    assert rep.mask_stats["dent"]["median"] == pytest.approx(15 / (12 * 16))
    assert rep.image_sizes == {"16x12": 7}  # corrupt, missing and twice-listed rows are not sized


def test_check_clean_synthetic_and_missing_mvtec_mask(tmp_path):
    ds = make_dataset(tmp_path)
    rep = check_dataset(ds)
    assert rep.ok and rep.image_sizes == {"48x36": 8}
    assert set(rep.mask_stats) == {"dent", "scratch"}
    for typ, st in rep.mask_stats.items():
        fr = [s.mask.mean() for s in ds.filter(label=typ)]
        assert st["min"] == pytest.approx(min(fr)) and st["max"] == pytest.approx(max(fr))
    # an MVTec defect image without a ground-truth mask
    root = tmp_path / "mv"
    write_image(root / "test" / "crack" / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_image(root / "train" / "good" / "b.png", np.ones((4, 4, 3), np.uint8))
    rep = check_dataset(root)
    assert rep.format == "mvtec"
    assert [(pr["kind"], pr["file"].rsplit("/", 1)[-1]) for pr in rep.problems] == [("missing mask", "a.png")]


def test_cli_check_bsdata_exact_counts_no_problems(bsdata_dir, tmp_path):
    out = tmp_path / "rep.json"
    res = runner.invoke(app, ["data", "check", str(bsdata_dir), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "manifest" in res.output and "no problems" in res.output
    rep = json.loads(out.read_text())
    assert rep["format"] == "manifest"
    assert rep["counts"] == {"train/good": 402, "train/pitting": 63, "test/good": 268, "test/pitting": 104}
    assert rep["problems"] == []
    assert rep["image_sizes"] == {"1130x460": 837}
    st = rep["mask_stats"]["pitting"]
    assert st["n"] == 167 and 0 < st["min"] <= st["median"] <= st["max"] < 0.05


def test_cli_check_reports_problems_with_exit_1(tmp_path):
    d = _broken_manifest(tmp_path)
    res = runner.invoke(app, ["data", "check", str(d), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1
    assert "8 problem(s)" in res.output and "corrupt.png" in res.output
    assert len(json.loads((tmp_path / "r.json").read_text())["problems"]) == 8


def _one_line_error(res, *names):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_cli_bad_input_one_line_errors(tmp_path):
    _one_line_error(runner.invoke(app, ["data", "check", str(tmp_path / "nope")]), "nope", "not found")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("hi")
    line = _one_line_error(runner.invoke(app, ["data", "check", str(tmp_path / "junk")]), "junk", "unknown dataset layout")
    assert "looked for" in line
    (tmp_path / "bad.csv").write_text("file,split\na.png,train\n")
    _one_line_error(runner.invoke(app, ["data", "check", str(tmp_path / "bad.csv")]), "bad.csv", "line 1", "label")
    (tmp_path / "rows.csv").write_text("file,split,label,mask\na.png,train,good,\nb.png,test\n")
    _one_line_error(runner.invoke(app, ["data", "check", str(tmp_path / "rows.csv")]), "rows.csv", "line 3")
    (tmp_path / "coco.json").write_text('{"images": [{"id": 1,, }]}')
    _one_line_error(runner.invoke(app, ["data", "check", str(tmp_path / "coco.json")]), "coco.json", "malformed JSON")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "annotations").mkdir()
    (tmp_path / "ann" / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 1}], "categories": []}))
    _one_line_error(runner.invoke(app, ["data", "check", str(tmp_path / "ann")]), "instances_train.json", "image_id")
    _one_line_error(runner.invoke(app, ["data", "check", str(tmp_path / "bad.csv"), "--format", "voc"]), "voc")


def test_cli_convert_chain_keeps_counts_masks_and_boxes(tmp_path):
    ds = make_dataset(tmp_path)
    # the synthetic files as an MVTec folder: the start of the chain
    from defectforge.data import write_mvtec

    mv = write_mvtec(ds, tmp_path / "mv")
    before = tree_digest(mv)
    chain = [("mv", "coco", "coco"), ("coco", "yolo", "yolo"), ("yolo", "manifest", "man")]
    for src, fmt, dst in chain:
        res = runner.invoke(app, ["data", "convert", str(tmp_path / src), str(tmp_path / dst), "--to", fmt])
        assert res.exit_code == 0, res.output
    assert tree_digest(mv) == before
    final = load_dataset(tmp_path / "man")
    assert final.format == "manifest" and final.counts() == load_dataset(mv).counts()
    kf = {(s.label, s.name): s for s in final}  # splits as the MVTec start of the chain placed them
    for s in ds:
        k = (s.label, s.name)
        t = kf[k]
        assert np.array_equal(s.image, t.image)
        if s.is_defect:
            assert np.array_equal(s.mask, t.mask), k
            assert [b.xywh() for b in t.derived_boxes()] == [b.xywh() for b in s.derived_boxes()]
    # yolo --mode detect keeps boxes (no masks) through to a manifest 'boxes' column
    res = runner.invoke(app, ["data", "convert", str(tmp_path / "coco"), str(tmp_path / "yd"), "--to", "yolo",
                              "--mode", "detect"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "convert", str(tmp_path / "yd"), str(tmp_path / "md"), "--to", "manifest"])
    assert res.exit_code == 0, res.output
    kd = {(s.label, s.name): s for s in load_dataset(tmp_path / "md")}
    for s in ds:
        k = (s.label, s.name)
        if s.is_defect:
            assert kd[k].mask is None
            assert sorted(np.round(b.xywh(), 3).tolist() for b in kd[k].boxes) == \
                sorted(list(b.xywh()) for b in s.derived_boxes())


def test_cli_convert_refuses_non_empty_or_overlapping_destination(tmp_path):
    ds = make_dataset(tmp_path)
    from defectforge.data import export_manifest

    src = export_manifest(ds, tmp_path / "m")
    before = tree_digest(src)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    _one_line_error(runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "busy"), "--to", "coco"]),
                    "busy", "not empty")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    _one_line_error(runner.invoke(app, ["data", "convert", str(src), str(src / "inside"), "--to", "coco"]),
                    "overlaps the source")
    _one_line_error(runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "x"), "--to", "voc"]), "voc")
    res = runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "busy"), "--to", "coco", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "busy" / "keep.txt").exists()
    assert load_dataset(tmp_path / "busy").counts() == ds.counts()
    assert tree_digest(src) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_bundled_sample_counts_size_and_license(tmp_path):
    root = sample_path()
    ds = load_sample()
    assert ds.format == "manifest"
    assert ds.counts() == {"train/good": 40, "train/pitting": 10, "test/good": 20, "test/pitting": 20}
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 5_000_000, total
    readme = (root / "README.md").read_text()
    for needle in ("CC BY-SA 4.0", "github.com/2Obe/BSData", "7204b28a621733c01cd75899ed9ea27f6ea0b9e3",
                   "10.1016/j.dib.2021.107643", "same license"):
        assert needle in readme, needle
    assert "Attribution-ShareAlike 4.0" in (root / "LICENSE").read_text()
    assert check_dataset(ds).problems == []
    assert len({s.meta["group"] for s in ds.filter(defect=True)}) >= 10  # spread over wear sequences
    assert all(s.mask.any() for s in ds.filter(defect=True))


def test_bundled_sample_is_a_faithful_subset(bsdata_dir):
    full = {s.path.name: s for s in load_dataset(bsdata_dir)}
    for s in load_sample():
        f = full[s.path.name]
        assert (s.split, s.label, s.meta) == (f.split, f.label, f.meta)
        assert s.path.read_bytes() == f.path.read_bytes()
        if s.is_defect:
            assert np.array_equal(read_mask(s.mask_path), read_mask(f.mask_path))


def test_sample_builder_is_deterministic(bsdata_dir, tmp_path):
    from defectforge.data._make_sample import build

    out = build(bsdata_dir, tmp_path / "s")
    assert (out / "split.csv").read_text() == (sample_path() / "split.csv").read_text()
    assert (out / "README.md").read_text() == (sample_path() / "README.md").read_text()


def test_blob_helper_components():
    from defectforge.data.polygons import component_masks

    assert [len(component_masks(blob_mask(k))) for k in ("one", "two", "three", "ring")] == [1, 2, 3, 1]
