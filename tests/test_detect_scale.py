"""Detectors at scale: the spooled fit selects the same bank as the full feature matrix,
defect sets are recorded, `detect fit --synthetic`, resumable streaming `detect predict`,
and `--device` errors on a machine without CUDA."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defectforge.bank.coreset import coreset_size, greedy_kcenter_bruteforce
from defectforge.bank.features import random_projection
from defectforge.data.image_io import write_image, write_mask
from defectforge.detect.cli import register
from defectforge.detect.exdd import ExDD
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device

from test_detect_model import SMALL, blob, texture, toy_samples

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")

app = area_app(register)


def test_spooled_fit_selects_the_bruteforce_bank_of_the_full_rows():
    """Only projected rows stay in memory during fit; the bank must still be exactly the
    brute-force greedy selection's full rows (so metrics are those of today's selection)."""
    train = toy_samples(0, 9, 0, "train")
    defects = toy_samples(1, 0, 4, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ExDD(**SMALL, val_fraction=0.0).fit(train, {"real": defects[:2], "synthetic:x": defects[2:]})
    rows = np.concatenate([m._rows([s.rgb()]) for s in train])
    proj = random_projection(rows.shape[1], SMALL["projection_dim"], 0)
    idx = greedy_kcenter_bruteforce(rows @ proj, coreset_size(len(rows), SMALL["normal_ratio"]), seed=0)
    # the same rows as the brute-force choice; values to float tolerance only, since the fit
    # extracts features in batches and `_rows` one image at a time (conv numerics differ ~1e-7)
    assert m.bank_normal_.shape == (len(idx), rows.shape[1])
    np.testing.assert_allclose(m.bank_normal_, rows[np.sort(idx)], rtol=0, atol=1e-5)
    sets = m.fit_info_["defect_sets"]
    assert [s["name"] for s in sets] == ["real", "synthetic:x"]
    assert [(s["images"], s["in_bank"], s["use"]) for s in sets] == [(2, 2, "bank"), (2, 2, "bank")]
    assert m.fit_info_["n_defect_images_in_bank"] == 4 and len(m.bank_defect_) > 0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_data")
    rng = np.random.default_rng(5)
    real, syn = root / "real", root / "synth"
    for i in range(8):
        write_image(real / "train" / "good" / f"g{i:02d}.png", texture(rng))
    for i in range(2):
        img, m = blob(rng)
        write_image(real / "train" / "blob" / f"tb{i:02d}.png", img)
        write_mask(real / "ground_truth" / "blob" / f"tb{i:02d}_mask.png", m)
    for i in range(3):
        img, m = blob(rng)
        write_image(syn / "train" / "blob" / f"s{i:02d}.png", img)
        write_mask(syn / "ground_truth" / "blob" / f"s{i:02d}_mask.png", m)
    for i in range(5):
        write_image(root / "images" / f"q{i:02d}.png", blob(rng)[0] if i % 2 else texture(rng))
    return root


def _fit(args, out):
    common = ["--random-init", "--image-size", "64x96"]
    return CliRunner().invoke(app, ["detect", "fit", *args, "--out", str(out), *common])


def test_fit_synthetic_alone_or_with_real_is_recorded(tmp_path, folders):
    both, alone = tmp_path / "both.dfm", tmp_path / "alone.dfm"
    r = _fit([str(folders / "real"), "--synthetic", str(folders / "synth"), "--defect-ratio", "1"], both)
    assert r.exit_code == 0, r.output
    r = _fit([str(folders / "real"), "--synthetic", str(folders / "synth"), "--no-real-defects", "--defect-ratio", "1"],
             alone)
    assert r.exit_code == 0, r.output
    info_both = ExDD.load(both).fit_info_
    info_alone = ExDD.load(alone).fit_info_
    assert [(s["name"].split(":")[0], s["images"], s["in_bank"]) for s in info_both["defect_sets"]] == \
        [("real", 2, 2), ("synthetic", 3, 3)]
    assert [(s["name"].split(":")[0], s["images"]) for s in info_alone["defect_sets"]] == [("synthetic", 3)]
    assert info_both["bank_defect"] > info_alone["bank_defect"] > 0
    # a folder without defect images is refused with one line
    r = _fit([str(folders / "real"), "--synthetic", str(folders / "images")], tmp_path / "x.dfm")
    assert r.exit_code == 2 and "error:" in r.output and not (tmp_path / "x.dfm").exists()


def test_predict_writes_as_it_goes_and_resumes(tmp_path, folders):
    model = tmp_path / "m.dfm"
    assert _fit([str(folders / "real")], model).exit_code == 0
    out = tmp_path / "pred"
    runner = CliRunner()
    r = runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(out), "--chunk", "2"])
    assert r.exit_code == 0, r.output
    full = (out / "scores.csv").read_text()
    rows = list(csv.DictReader(full.splitlines()))
    assert [row["file"].rsplit("/", 1)[-1] for row in rows] == [f"q{i:02d}.png" for i in range(5)]
    assert all(row["heatmap"] == f"heatmaps/q{i:02d}.png" for i, row in enumerate(rows))
    # interrupted run: two rows complete, a torn third line, and one row whose mask is missing
    lines = full.splitlines(keepends=True)
    (out / "scores.csv").write_text("".join(lines[:4]) + lines[4][:9])
    (out / rows[2]["mask"]).unlink()
    kept = (out / rows[0]["heatmap"]).stat().st_mtime_ns
    r = runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "resuming: 2 of 5" in r.output
    again = list(csv.DictReader((out / "scores.csv").read_text().splitlines()))
    assert sorted(row["file"] for row in again) == sorted(row["file"] for row in rows)
    assert {row["file"]: row["score"] for row in again} == {row["file"]: row["score"] for row in rows}
    assert (out / rows[0]["heatmap"]).stat().st_mtime_ns == kept  # not redone
    # another model into the same folder is refused, even with the same thresholds
    other = tmp_path / "other.dfm"
    assert _fit([str(folders / "real"), "--seed", "3"], other).exit_code == 0
    same = ["--threshold", "0.5", "--pixel-threshold", "0.5"]
    pinned = tmp_path / "pinned"
    assert runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(pinned),
                               "--chunk", "2", *same]).exit_code == 0
    before = (pinned / "scores.csv").read_bytes()
    (pinned / "scores.csv").write_text("".join(before.decode().splitlines(keepends=True)[:3]))
    r = runner.invoke(app, ["detect", "predict", str(other), str(folders / "images"), "--out", str(pinned), *same])
    assert r.exit_code == 2 and "predict.json" in r.output and "another model" in r.output
    assert len(r.output.strip().splitlines()) == 1
    # the same model with another nearest-neighbour search is refused too; the same options resume
    r = runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(pinned), *same,
                            "--nn-backend", "ivf"])
    assert r.exit_code == 2 and "nearest-neighbour search" in r.output
    r = runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(pinned), *same])
    assert r.exit_code == 0 and "resuming: 2 of 5" in r.output
    assert (pinned / "scores.csv").read_bytes() == before
    # a folder of a version without predict.json: only the threshold can be compared
    (pinned / "predict.json").unlink()
    (pinned / "scores.csv").write_text("".join(before.decode().splitlines(keepends=True)[:3]))
    r = runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(pinned),
                            "--threshold", "0.25", "--pixel-threshold", "0.5"])
    assert r.exit_code == 2 and "scores.csv" in r.output and "threshold differs" in r.output


def test_predict_never_writes_over_its_inputs_or_a_foreign_folder(tmp_path, folders):
    """An --out that holds the inputs (a dataset folder with its masks/, an image inside
    masks/) or other files is refused in one line before anything is written; inputs unchanged."""
    import hashlib
    import shutil

    model = tmp_path / "m.dfm"
    assert _fit([str(folders / "real")], model).exit_code == 0
    ds = tmp_path / "ds"
    shutil.copytree(folders / "real", ds)
    gt = sorted((ds / "ground_truth").rglob("*.png"))
    before = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(ds.rglob("*")) if f.is_file()}
    runner = CliRunner()
    for images, out in ((ds / "train" / "blob", ds), (gt[0], gt[0].parent.parent)):
        r = runner.invoke(app, ["detect", "predict", str(model), str(images), "--out", str(out)])
        assert r.exit_code == 2 and "overlaps the input" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    foreign = tmp_path / "notes"
    (foreign / "masks").mkdir(parents=True)
    (foreign / "masks" / "q00.png").write_bytes(b"mine")
    r = runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(foreign)])
    assert r.exit_code == 2 and "did not write (masks)" in r.output and "choose an empty or new --out" in r.output
    assert (foreign / "masks" / "q00.png").read_bytes() == b"mine" and not (foreign / "scores.csv").exists()
    assert {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(ds.rglob("*")) if f.is_file()} == before
    # an earlier run's folder (and an empty one) are fine: the resume above relies on it
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["detect", "predict", str(model), str(folders / "images"), "--out", str(tmp_path / "empty")])
    assert r.exit_code == 0, r.output


def test_a_resumed_run_keeps_the_first_runs_colour_scale(tmp_path, folders):
    """Without a pixel threshold the first chunk's maps fix the colours; a resume reuses them."""
    from defectforge.detect.predict_job import RUN_FILE, predict_files

    model_path = tmp_path / "m.dfm"
    assert _fit([str(folders / "real")], model_path).exit_code == 0
    files = sorted((folders / "images").glob("*.png"))
    model = ExDD.load(model_path)
    model.pixel_threshold_ = None
    full = tmp_path / "full"
    predict_files(model_path, files, full, model=model, chunk=2)
    part = tmp_path / "part"
    predict_files(model_path, files[:2], part, model=model, chunk=2)  # "interrupted" after one chunk
    predict_files(model_path, files, part, model=model, chunk=2)
    # with the first three images first, the new first chunk would give another scale
    assert (part / RUN_FILE).read_text() == (full / RUN_FILE).read_text()
    for f in files:
        assert (part / "heatmaps" / f.name).read_bytes() == (full / "heatmaps" / f.name).read_bytes(), f.name
    assert (part / "scores.csv").read_bytes() == (full / "scores.csv").read_bytes()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_device_cuda_without_gpu_is_one_line_error(tmp_path, folders):
    r = _fit([str(folders / "real"), "--device", "cuda"], tmp_path / "g.dfm")
    assert r.exit_code == 2 and "CUDA is not available" in r.output
    r = _fit([str(folders / "real"), "--device", "tpu"], tmp_path / "g.dfm")
    assert r.exit_code == 2 and "unknown device 'tpu'" in r.output


def test_heatmaps_jpg_or_none_and_a_resume_keeps_the_format(tmp_path, folders):
    from defectforge.data.image_io import read_image

    model = tmp_path / "m.dfm"
    assert _fit([str(folders / "real")], model).exit_code == 0
    runner = CliRunner()
    base = ["detect", "predict", str(model), str(folders / "images"), "--chunk", "2"]
    png, jpg, none = tmp_path / "png", tmp_path / "jpg", tmp_path / "none"
    for out, fmt in ((png, "png"), (jpg, "jpg"), (none, "none")):
        r = runner.invoke(app, [*base, "--out", str(out), "--heatmaps", fmt])
        assert r.exit_code == 0, r.output
    rows = {d: list(csv.DictReader((d / "scores.csv").read_text().splitlines())) for d in (png, jpg, none)}
    # the same scores and masks whatever the panels
    for d in (jpg, none):
        assert [(x["file"], x["score"], x["mask"]) for x in rows[d]] == [(x["file"], x["score"], x["mask"])
                                                                          for x in rows[png]]
        for x in rows[d]:
            assert (d / x["mask"]).read_bytes() == (png / x["mask"]).read_bytes()
    assert all(x["heatmap"].endswith(".jpg") and (jpg / x["heatmap"]).is_file() for x in rows[jpg])
    a, b = (read_image(d / x["heatmap"]).astype(int) for d, x in ((png, rows[png][0]), (jpg, rows[jpg][0])))
    assert a.shape == b.shape and np.abs(a - b).mean() < 8  # the same panel, JPEG-compressed
    assert all(x["heatmap"] == "" for x in rows[none]) and not (none / "heatmaps").exists()
    # an interrupted 'none' run resumes (rows without a panel are complete) ...
    full = (none / "scores.csv").read_text()
    (none / "scores.csv").write_text("".join(full.splitlines(keepends=True)[:3]))
    r = runner.invoke(app, [*base, "--out", str(none), "--heatmaps", "none"])
    assert r.exit_code == 0 and "resuming: 2 of 5" in r.output
    assert (none / "scores.csv").read_text() == full
    # ... but not with panels now: the folder would mix rows with and without them
    (none / "scores.csv").write_text("".join(full.splitlines(keepends=True)[:3]))
    r = runner.invoke(app, [*base, "--out", str(none), "--heatmaps", "png"])
    assert r.exit_code == 2 and "heatmap format" in r.output
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), "--heatmaps", "gif"])
    assert r.exit_code == 2 and "heatmaps must be one of png, jpg, none" in r.output and not (tmp_path / "x").exists()
