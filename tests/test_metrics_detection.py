"""COCO box mAP: hand-computed cases and (when installed) pycocotools on random data."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from defectforge.data import Box
from defectforge.errors import InputError
from defectforge.metrics import (
    COCO_IOU_THRESHOLDS,
    UndefinedMetricError,
    box_iou,
    mean_average_precision,
)

HALF = 51 / 101  # recall 0.5 at precision 1: recall points 0, 0.01, ..., 0.50 score 1


def gt(x0, y0, x1, y1, label="defect"):
    return Box(x0, y0, x1, y1, label)


def det(x0, y0, x1, y1, score, label="defect"):
    return Box(x0, y0, x1, y1, label, score)


def test_iou_uses_continuous_coordinates():
    others = np.array([[0, 0, 10, 20], [5, 5, 15, 15], [10, 0, 20, 10]])
    iou = box_iou(np.array([[0, 0, 10, 10]]), others)
    np.testing.assert_allclose(iou, [[0.5, 25 / 175, 0.0]])  # touching boxes do not overlap


def test_perfect_detections_give_one():
    g = [[gt(0, 0, 10, 10), gt(20, 20, 30, 40)], [gt(5, 5, 8, 9)]]
    p = [[det(*b.xywh()[:2], b.x1, b.y1, 0.9) for b in img] for img in g]
    res = mean_average_precision(g, p)
    assert res["map50"] == 1.0 and res["map50_95"] == 1.0
    assert res["n_images"] == 2
    assert res["per_class"]["defect"] == {"ap50": 1.0, "ap50_95": 1.0, "n_gt": 3, "n_pred": 3}


def test_one_missed_object_halves_recall():
    g = [[gt(0, 0, 10, 10), gt(50, 50, 60, 60)]]
    p = [[det(0, 0, 10, 10, 0.9)]]
    res = mean_average_precision(g, p)
    assert res["map50"] == pytest.approx(HALF) and res["map50_95"] == pytest.approx(HALF)


def test_false_positive_ranked_above_true_positive():
    g = [[gt(0, 0, 10, 10)]]
    fp_first = [[det(40, 40, 50, 50, 0.9), det(0, 0, 10, 10, 0.8)]]
    # ranking FP, TP: precision 1/2 at recall 1 -> every recall point gets 0.5
    assert mean_average_precision(g, fp_first)["map50"] == pytest.approx(0.5)
    tp_first = [[det(40, 40, 50, 50, 0.7), det(0, 0, 10, 10, 0.8)]]
    assert mean_average_precision(g, tp_first)["map50"] == pytest.approx(1.0)


@pytest.mark.parametrize("x1, expect", [(4.99, 0.0), (5.0, 1.0), (5.01, 1.0)])
def test_iou_at_the_half_threshold(x1, expect):
    g = [[gt(0, 0, 10, 10)]]
    p = [[det(0, 0, x1, 10, 0.9)]]  # IoU = x1 / 10
    res = mean_average_precision(g, p)
    assert res["map50"] == expect  # IoU exactly 0.5 counts (COCO: iou >= t)
    assert res["map50_95"] == expect / 10  # only the 0.50 threshold is passed


def test_map50_95_counts_thresholds_passed():
    g = [[gt(0, 0, 100, 10)]]
    p = [[det(0, 0, 72, 10, 0.9)]]  # IoU 0.72 passes 0.50, 0.55, 0.60, 0.65, 0.70
    res = mean_average_precision(g, p)
    assert res["map50"] == 1.0 and res["map50_95"] == pytest.approx(0.5)


def test_two_classes_and_a_class_without_ground_truth():
    g = [[gt(0, 0, 10, 10, "pit"), gt(20, 0, 30, 10, "scratch")]]
    p = [[det(0, 0, 10, 10, 0.9, "pit"),
          det(60, 60, 70, 70, 0.8, "scratch"),  # misses the scratch
          det(0, 0, 10, 10, 0.7, "dent")]]  # class with no ground truth anywhere
    res = mean_average_precision(g, p)
    assert res["per_class"]["pit"]["ap50"] == 1.0
    assert res["per_class"]["scratch"]["ap50"] == 0.0
    assert res["per_class"]["dent"] == {"ap50": None, "ap50_95": None, "n_gt": 0, "n_pred": 1}
    assert res["map50"] == pytest.approx(0.5)  # dent excluded from the mean
    only_pit = mean_average_precision(g, p, classes=["pit"])
    assert only_pit["map50"] == 1.0 and set(only_pit["per_class"]) == {"pit"}


def test_image_without_ground_truth_only_false_positives():
    g = [[gt(0, 0, 10, 10)], []]
    high = [[det(0, 0, 10, 10, 0.8)], [det(0, 0, 10, 10, 0.9)]]
    low = [[det(0, 0, 10, 10, 0.8)], [det(0, 0, 10, 10, 0.7)]]
    assert mean_average_precision(g, high)["map50"] == pytest.approx(0.5)
    assert mean_average_precision(g, low)["map50"] == pytest.approx(1.0)


def test_greedy_matching_by_descending_score():
    gts = [gt(0, 0, 10, 1), gt(3, 0, 13, 1)]
    d1, d2 = (2, 0, 12, 1), (4, 0, 14, 1)
    iou = box_iou(np.array([d1, d2]), np.array([[b.x0, b.y0, b.x1, b.y1] for b in gts]))
    assert iou[0, 0] > 0.5 and iou[0, 1] > iou[0, 0]  # d1 prefers gt 2, could take gt 1
    assert iou[1, 1] > 0.5 > iou[1, 0]  # d2 can only take gt 2
    # d1 first takes gt 2, d2 is left with nothing: TP, FP
    res = mean_average_precision([gts], [[det(*d1, 0.9), det(*d2, 0.8)]], iou_thresholds=[0.5])
    assert res["map50"] == pytest.approx(HALF)
    # d2 first takes gt 2, d1 then takes gt 1: TP, TP
    res = mean_average_precision([gts], [[det(*d1, 0.8), det(*d2, 0.9)]], iou_thresholds=[0.5])
    assert res["map50"] == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive():
    g = [[gt(0, 0, 10, 10)]]
    p = [[det(0, 0, 10, 10, 0.9), det(0, 0, 10, 10, 0.8)]]
    # TP then FP: precision envelope stays 1 up to recall 1 -> AP 1 (COCO does not punish
    # a duplicate ranked below the match)
    assert mean_average_precision(g, p)["map50"] == 1.0
    p = [[det(0, 0, 10, 10, 0.9), det(0, 0, 10, 10, 0.8)], [det(0, 0, 10, 10, 0.95)]]
    assert mean_average_precision([g[0], []], p)["map50"] == pytest.approx(0.5)


def test_max_detections_per_image():
    g = [[gt(0, 0, 10, 10)]]
    fps = [det(100 + i, 100, 110 + i, 110, 0.9) for i in range(100)]
    p = [fps + [det(0, 0, 10, 10, 0.1)]]
    assert mean_average_precision(g, p)["map50"] == 0.0  # the TP is the 101st detection
    assert mean_average_precision(g, p, max_detections=101)["map50"] > 0.0


def test_custom_thresholds_without_half():
    res = mean_average_precision([[gt(0, 0, 10, 10)]], [[det(0, 0, 10, 8, 0.9)]],
                                 iou_thresholds=[0.75, 0.85])
    assert res["map50"] is None and res["map50_95"] == pytest.approx(0.5)


def test_errors_and_undefined():
    with pytest.raises(InputError, match="2 images but predictions has 1"):
        mean_average_precision([[], []], [[]])
    with pytest.raises(InputError, match="image 0: prediction 0 needs a finite score"):
        mean_average_precision([[gt(0, 0, 1, 1)]], [[Box(0, 0, 1, 1)]])
    with pytest.raises(InputError, match="x1 < x0"):
        mean_average_precision([[gt(5, 0, 1, 1)]], [[]])
    with pytest.raises(UndefinedMetricError, match="no ground-truth box"):
        mean_average_precision([[], []], [[det(0, 0, 1, 1, 0.5)], []])
    res = mean_average_precision([[]], [[det(0, 0, 1, 1, 0.5)]], nan_on_undefined=True)
    assert np.isnan(res["map50"]) and np.isnan(res["map50_95"])


def _random_dataset(rng, n_images=12, classes=("a", "b", "c")):
    gts, preds = [], []
    for _ in range(n_images):
        g, p = [], []
        for _ in range(rng.integers(0, 5)):
            x0, y0 = rng.integers(0, 80, 2)
            w, h = rng.integers(4, 30, 2)
            lab = str(rng.choice(classes))
            g.append(gt(float(x0), float(y0), float(x0 + w), float(y0 + h), lab))
            if rng.random() < 0.8:  # a jittered detection of it
                j = rng.normal(0, 3, 4)
                px0, py0 = x0 + j[0], y0 + j[1]
                p.append(det(px0, py0, max(px0 + 1, x0 + w + j[2]), max(py0 + 1, y0 + h + j[3]),
                             float(rng.integers(1, 20)) / 20, lab))  # coarse scores: ties
        for _ in range(rng.integers(0, 4)):  # false positives
            x0, y0 = rng.uniform(0, 90, 2)
            p.append(det(x0, y0, x0 + rng.uniform(2, 20), y0 + rng.uniform(2, 20),
                         float(rng.integers(1, 20)) / 20, str(rng.choice(classes))))
        gts.append(g)
        preds.append(p)
    return gts, preds


def _crowded_dataset(rng, n_images=6, classes=("a", "b")):
    """Many overlapping integer boxes, duplicated ground truth (IoU ties), 5 score levels."""
    gts, preds = [], []
    for _ in range(n_images):
        g, p = [], []
        for _ in range(rng.integers(0, 15)):
            x0, y0 = rng.integers(0, 12, 2)
            w, h = rng.integers(4, 10, 2)
            b = gt(float(x0), float(y0), float(x0 + w), float(y0 + h), str(rng.choice(classes)))
            g += [b, b] if rng.random() < 0.3 else [b]
        for _ in range(rng.integers(0, 20)):
            x0, y0 = rng.integers(0, 12, 2)
            w, h = rng.integers(4, 10, 2)
            p.append(det(float(x0), float(y0), float(x0 + w), float(y0 + h),
                         float(rng.integers(1, 5)) / 5, str(rng.choice(classes))))
        gts.append(g)
        preds.append(p)
    return gts, preds


def _sized_dataset(rng, n_images=10, classes=("a", "b")):
    """Boxes of every COCO size (small < 32^2 <= medium < 96^2 <= large), some exactly on the
    boundaries, jittered detections across the boundaries and false positives of all sizes."""
    gts, preds = [], []
    sides = [8, 20, 31, 32, 33, 60, 95, 96, 97, 140]
    for _ in range(n_images):
        g, p = [], []
        for _ in range(rng.integers(1, 7)):
            w, h = (int(rng.choice(sides)), int(rng.choice(sides)))
            x0, y0 = rng.integers(0, 150, 2)
            lab = str(rng.choice(classes))
            g.append(gt(float(x0), float(y0), float(x0 + w), float(y0 + h), lab))
            if rng.random() < 0.85:
                j = rng.normal(0, 0.06 * max(w, h), 4)
                px0, py0 = x0 + j[0], y0 + j[1]
                p.append(det(px0, py0, max(px0 + 1, x0 + w + j[2]), max(py0 + 1, y0 + h + j[3]),
                             float(rng.integers(1, 20)) / 20, lab))
        for _ in range(rng.integers(0, 4)):
            x0, y0 = rng.uniform(0, 150, 2)
            side = float(rng.choice(sides))
            p.append(det(x0, y0, x0 + side, y0 + side * rng.uniform(0.5, 1.5),
                         float(rng.integers(1, 20)) / 20, str(rng.choice(classes))))
        gts.append(g)
        preds.append(p)
    return gts, preds


@pytest.mark.parametrize("seed, make", [(s, m) for s in range(3)
                                        for m in (_random_dataset, _crowded_dataset, _sized_dataset)])
def test_matches_pycocotools(seed, make):
    coco_mod = pytest.importorskip("pycocotools.coco", reason="pycocotools not installed")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    rng = np.random.default_rng(seed)
    gts, preds = make(rng)
    names = sorted({b.label for img in gts for b in img} | {b.label for img in preds for b in img})
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, anns, dets = [], [], []
    for i, (g, p) in enumerate(zip(gts, preds)):
        images.append({"id": i + 1, "width": 200, "height": 200})
        for b in g:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat[b.label],
                         "bbox": list(b.xywh()), "area": b.area, "iscrowd": 0})
        for b in p:
            dets.append({"image_id": i + 1, "category_id": cat[b.label],
                         "bbox": list(b.xywh()), "score": b.score})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = coco_mod.COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": v, "name": k} for k, v in cat.items()]}
        coco.createIndex()
        ev = cocoeval.COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = mean_average_precision(gts, preds)
    assert ours["map50_95"] == pytest.approx(ev.stats[0], abs=1e-9)
    assert ours["map50"] == pytest.approx(ev.stats[1], abs=1e-9)
    for key, ref in zip(("map_small", "map_medium", "map_large"), ev.stats[3:6]):
        assert (ours[key] is None) if ref == -1 else ours[key] == pytest.approx(ref, abs=1e-6), key
    # per class at IoU 0.5: precision[T, R, K, A, M] with area "all", maxDets 100
    prec = ev.eval["precision"][0, :, :, 0, -1]
    for k, name in enumerate(names):
        col = prec[:, k]
        expect = None if (col < 0).all() else float(col.mean())
        got = ours["per_class"][name]["ap50"]
        assert (got is None) if expect is None else got == pytest.approx(expect, abs=1e-9)


def test_coco_iou_thresholds():
    assert len(COCO_IOU_THRESHOLDS) == 10
    np.testing.assert_allclose(COCO_IOU_THRESHOLDS, np.arange(10) * 0.05 + 0.5)
