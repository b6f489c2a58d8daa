"""Reports an inspection engineer can act on: confusion counts and sweeps at the stored
thresholds, per-type rows, panels on one colour scale, and what ``detect predict`` /
``detect eval`` write (thresholds, confusion counts, per-image scores, panels)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from defectforge.data.image_io import read_image
from defectforge.report.panels import colorize, map_scale, panel
from defectforge.report.threshold import (confusion_counts, per_type_rows, pixel_confusion, threshold_sweep)
from defectforge.report.visual import line_width, mask_overlay

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


def test_confusion_and_sweep_match_a_direct_count():
    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.4
    s = rng.normal(size=60) + 1.2 * y
    s[5] = s[6]  # a tie
    for thr in (s[5], np.median(s), s.max(), s.min()):
        c = confusion_counts(y, s, thr)
        pred = [v >= thr for v in s]
        assert c["tp"] == sum(p and t for p, t in zip(pred, y))
        assert c["fp"] == sum(p and not t for p, t in zip(pred, y))
        assert c["tn"] + c["fn"] == sum(not p for p in pred)
        assert c["tp"] + c["fp"] + c["tn"] + c["fn"] == 60
    sw = threshold_sweep(y, s)
    for t, p, r in zip(sw["threshold"], sw["precision"], sw["recall"]):
        c = confusion_counts(y, s, t)
        assert p == pytest.approx(c["precision"]) and r == pytest.approx(c["recall"])
    assert confusion_counts(y, s, None)["tp"] is None
    assert threshold_sweep(np.zeros(4, bool), np.arange(4.0)) == {}


def test_pixel_confusion_pools_images_and_treats_missing_masks_as_background():
    maps = [np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[0.95, 0.0], [0.0, 0.0]])]
    masks = [np.array([[0, 1], [0, 1]], bool), None]
    c = pixel_confusion(masks, maps, 0.5)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (1, 2, 1, 4)


def test_per_type_rows_give_recall_per_type_and_false_alarms():
    labels = ["good"] * 4 + ["dent"] * 2 + ["scratch"] * 3
    scores = [0.1, 0.2, 0.6, 0.3, 0.7, 0.4, 0.9, 0.8, 0.55]
    rows = {r["type"]: r for r in per_type_rows(labels, scores, 0.5)}
    assert rows["good"]["flagged"] == 1 and rows["good"]["meaning"] == "false alarms"
    assert rows["dent"]["flagged share"] == 0.5 and rows["scratch"]["flagged share"] == 1.0
    assert rows["scratch"]["AUROC vs good"] == pytest.approx(11 / 12)  # 0.55 < one good (0.6)
    assert rows["dent"]["AUROC vs good"] == pytest.approx((4 + 3) / 8)
    assert rows["good"]["AUROC vs good"] is None


def test_one_colour_scale_never_stretches_a_good_image():
    thr = 2.0
    good = np.full((20, 30), 0.5, np.float32)
    good[3, 3] = 0.9  # its own maximum: a per-image min-max would paint it dark red
    defect = np.full((20, 30), 0.5, np.float32)
    defect[5:9, 5:9] = 3.5
    sc = map_scale(thr, [good, defect])
    assert sc.normalise(np.float32(thr)) == pytest.approx(0.5)  # threshold at a fixed colour
    assert np.array_equal(colorize(good, sc)[0, 0], colorize(defect, sc)[0, 0])  # same value, same colour
    hot = colorize(np.array([[thr]], np.float32), sc)[0, 0]
    assert not np.array_equal(colorize(good, sc)[3, 3], colorize(np.array([[4.0]], np.float32), sc)[0, 0])
    assert sc.normalise(good).max() < 0.5 < sc.normalise(defect).max()
    assert hot.shape == (3,)
    # without a threshold: one range for all maps (not one per map)
    s2 = map_scale(None, [good, defect])
    assert s2.lo == pytest.approx(0.5) and s2.hi == pytest.approx(3.5)


def test_ground_truth_outline_survives_shrinking():
    import cv2

    img = np.full((460, 1130, 3), 128, np.uint8)
    m = np.zeros((460, 1130), bool)
    m[200:212, 500:512] = True  # a 12-px pit, as in BSData
    ov = mask_overlay(img, m)
    small = cv2.resize(ov, (480, round(460 * 480 / 1130)), interpolation=cv2.INTER_AREA)
    red = (small[..., 0].astype(int) - small[..., 1]) > 60
    assert red.sum() >= 9  # still a visible red blob after 2.35x shrinking
    assert line_width((460, 1130)) >= 3 and line_width((64, 64)) == 1


def test_panel_has_tiles_and_colour_bar():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    amap = np.zeros((40, 40), np.float32)
    amap[10:20, 10:20] = 5.0
    gt = amap > 0
    sc = map_scale(1.0)
    full = panel(img, amap, sc, gt)
    no_gt = panel(img, amap, sc, with_gt=False)
    assert full.shape[0] == no_gt.shape[0] and full.shape[1] > no_gt.shape[1] + 30  # one tile fewer
    # the predicted mask tile (4th) is tinted where map >= threshold
    band = full.shape[0] - 40
    tile = full[band:, 3 * (40 + 6):3 * (40 + 6) + 40]
    assert not np.array_equal(tile[15, 15], img[15, 15]) and np.array_equal(tile[30, 30], img[30, 30])


# --------------------------------------------------------------------------- CLI end to end
from test_detect_cli import app, mvtec  # noqa: E402,F401  (the detect app and the toy MVTec fixture)


@pytest.fixture(scope="module")
def fitted(mvtec, tmp_path_factory):  # noqa: F811
    model = tmp_path_factory.mktemp("model") / "toy_model.dfm"
    r = CliRunner().invoke(app, ["detect", "fit", str(mvtec), "--out", str(model), "--random-init",
                                 "--image-size", "64x96"])
    assert r.exit_code == 0, r.output
    return mvtec, model


def test_eval_json_has_thresholds_confusion_and_per_image_scores(tmp_path, fitted):
    root, model = fitted
    js, rep = tmp_path / "m.json", tmp_path / "rep"
    r = CliRunner().invoke(app, ["detect", "eval", str(model), str(root), "--json", str(js), "--report", str(rep)])
    assert r.exit_code == 0, r.output
    m = json.loads(js.read_text())
    assert m["threshold"] is not None and m["threshold_source"].startswith("validation")
    assert len(m["per_image"]) == m["n_images"] == 8
    scores = np.array([p["score"] for p in m["per_image"]])
    y = np.array([p["label"] != "good" for p in m["per_image"]])
    assert m["confusion"] == {**m["confusion"], **{k: v for k, v in confusion_counts(y, scores, m["threshold"]).items()
                                                  if k in ("tp", "fp", "tn", "fn")}}
    assert m["confusion"]["f1"] == pytest.approx(m["f1_at_threshold"])
    assert m["pixel_confusion"]["f1"] == pytest.approx(m["pixel_f1_at_threshold"])
    assert sum(m["pixel_confusion"][k] for k in ("tp", "fp", "tn", "fn")) == 8 * 64 * 96
    assert {r["type"] for r in m["per_type"]} == {"good", "blob"}
    html = (rep / "report.html").read_text()
    for text in ("image confusion matrix", "pixel confusion matrix", "image PR curve",
                 "precision, recall and F1 against the threshold", "per defect type", "Try a threshold"):
        assert text in html
    # --threshold: the counts follow the given threshold, and the JSON says where it came from
    r = CliRunner().invoke(app, ["detect", "eval", str(model), str(root), "--json", str(js), "--threshold",
                                 str(float(np.median(scores)))])
    assert r.exit_code == 0, r.output
    m2 = json.loads(js.read_text())
    assert m2["threshold_source"] == "--threshold"
    r = CliRunner().invoke(app, ["detect", "eval", str(model), str(root), "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["per_image"] == m["per_image"]  # stdout holds only the JSON
    assert m2["confusion"]["tp"] + m2["confusion"]["fp"] == int((scores >= np.median(scores)).sum())


def test_predict_uses_one_scale_and_the_given_threshold(tmp_path, fitted):
    root, model = fitted
    out = tmp_path / "pred"
    r = CliRunner().invoke(app, ["detect", "predict", str(model), str(root / "test" / "good"),
                                 str(root / "test" / "blob"), "--out", str(out), "--threshold", "-1e9",
                                 "--pixel-threshold", "1e9"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 8 and all(row["anomalous"] == "1" for row in rows)  # everything >= -1e9
    assert all(row["heatmap"].count(".png") == 1 for row in rows)
    assert all(float(row["threshold"]) == -1e9 for row in rows)
    assert all(not read_image(out / row["mask"]).any() for row in rows)  # nothing >= 1e9
    # panels (image | map | mask | colour bar), all the same size
    pics = [read_image(out / row["heatmap"]) for row in rows]
    assert len({p.shape for p in pics}) == 1 and pics[0].shape[1] > 3 * 96


def test_bootstrap_interval_covers_the_value_and_shrinks_with_data():
    from defectforge.metrics import auroc
    from defectforge.report.compare import bootstrap_ci

    rng = np.random.default_rng(0)
    small_y = rng.random(40) < 0.5
    big_y = rng.random(800) < 0.5
    small_s = rng.normal(size=40) + small_y
    big_s = rng.normal(size=800) + big_y
    lo, hi = bootstrap_ci(small_y, small_s, auroc, n_boot=300)
    blo, bhi = bootstrap_ci(big_y, big_s, auroc, n_boot=300)
    assert lo <= auroc(small_y, small_s) <= hi and blo <= auroc(big_y, big_s) <= bhi
    assert (bhi - blo) < (hi - lo) / 2  # 20x the images: a much narrower interval
    assert bootstrap_ci(small_y, small_s, auroc, n_boot=300) == (lo, hi)  # seeded
    assert np.isnan(bootstrap_ci(np.ones(5, bool), np.arange(5.0), auroc)[0])


def test_eval_compare_overlays_models_with_intervals(tmp_path, fitted):
    root, model = fitted
    other = tmp_path / "other.dfm"
    r = CliRunner().invoke(app, ["detect", "fit", str(root), "--model", "patchcore", "--out", str(other),
                                 "--random-init", "--image-size", "64x96"])
    assert r.exit_code == 0, r.output
    js, rep = tmp_path / "m.json", tmp_path / "rep"
    r = CliRunner().invoke(app, ["detect", "eval", str(model), str(root), "--compare", str(other),
                                 "--json", str(js), "--report", str(rep)])
    assert r.exit_code == 0, r.output
    m = json.loads(js.read_text())
    rows = {row["model"]: row for row in m["comparison"]}
    assert set(rows) == {model.name, other.name}
    assert rows[model.name]["image_auroc"] == m["image_auroc"]
    lo, hi = rows[model.name]["image_auroc_ci95"]
    assert lo <= m["image_auroc"] <= hi
    html = (rep / "report.html").read_text()
    assert "Models compared on the same images" in html and "image ROC, all models" in html
