"""Issue 12 item 3: bounded-memory pixel metrics (metrics.streaming) agree with the exact ones
within their stated bound, and ``detect eval`` above the pixel budget does not hold all maps."""

from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defectforge.data.sample import Sample
from defectforge.errors import ConfigError
from defectforge.metrics import UndefinedMetricError, evaluate_anomaly, pro_curve
from defectforge.metrics.streaming import PixelAccumulator, accumulator_quantile, choose_pixel_path
from defectforge.report.threshold import pixel_confusion

KEYS = ("pixel_auroc", "pixel_ap", "aupro")


def _binned(masks, maps, chunk=3, pthr=None, bits=15, limit=0.3):
    acc = PixelAccumulator(pthr, mantissa_bits=bits)
    for s in range(0, len(maps), chunk):
        acc.add(masks[s:s + chunk], maps[s:s + chunk])
    return acc, acc.metrics(limit, nan_on_undefined=True)


@st.composite
def pixel_sets(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 6))
    levels = draw(st.sampled_from([2, 5, 50, 0]))  # 0 = continuous; few levels = many ties
    masks, maps = [], []
    for i in range(n):
        h, w = draw(st.integers(2, 14)), draw(st.integers(2, 14))
        kind = draw(st.sampled_from(["good", "none", "blobs", "tiny", "full"]))
        if kind == "none":
            m = None
        elif kind == "good":
            m = np.zeros((h, w), bool)
        elif kind == "tiny":  # one-pixel regions
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h, 2), rng.integers(0, w, 2)] = True
        elif kind == "full":
            m = np.ones((h, w), bool)
        else:
            m = rng.random((h, w)) > 0.7
        a = (rng.integers(0, levels, (h, w)).astype(np.float32) if levels
             else rng.normal(0, 3, (h, w)).astype(np.float32))
        if m is not None:
            a = a + m * np.float32(draw(st.sampled_from([0.0, 0.5, 2.0])))
        masks.append(m)
        maps.append(a.astype(np.float32))
    return masks, maps


@settings(max_examples=120, deadline=None)
@given(pixel_sets(), st.sampled_from([15, 6, 2]), st.sampled_from([0.05, 0.3, 1.0]), st.integers(1, 4))
def test_binned_within_stated_bound_of_exact(data, bits, limit, chunk):
    masks, maps = data
    labels = np.array([m is not None and m.any() for m in masks])
    exact = evaluate_anomaly(labels, np.zeros(len(maps)), masks, maps, fpr_limit=limit,
                             pixel_threshold=1.0, nan_on_undefined=True)
    acc, got = _binned(masks, maps, chunk, 1.0, bits, limit)
    for k in KEYS:
        if np.isnan(exact[k]):
            assert np.isnan(got[k]) and got["pixel_metrics_max_error"][k] is None
            continue
        bound = got["pixel_metrics_max_error"][k]
        assert 0.0 <= bound <= 1.0
        assert abs(got[k] - exact[k]) <= bound + 1e-9, (k, got[k], exact[k], bound)
    # confusion counts and pixel F1 at the threshold are exact, not approximated
    ref = pixel_confusion(masks, maps, 1.0)
    assert {k: ref[k] for k in ("tp", "fp", "fn", "tn")} == acc.confusion_counts()
    if not np.isnan(exact["pixel_f1_at_threshold"]):
        assert got["pixel_f1_at_threshold"] == pytest.approx(exact["pixel_f1_at_threshold"], abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(pixel_sets())
def test_one_value_per_bin_is_exact(data):
    """With every float32 value in its own bin (23 mantissa bits), the binned metrics are the
    exact ones, ties included, and the stated error is zero wherever no bin mixes classes."""
    masks, maps = data
    labels = np.array([m is not None and m.any() for m in masks])
    exact = evaluate_anomaly(labels, np.zeros(len(maps)), masks, maps, nan_on_undefined=True)
    _, got = _binned(masks, maps, bits=23)
    for k in KEYS:
        assert got[k] == pytest.approx(exact[k], abs=1e-9, nan_ok=True)
    if not np.isnan(exact["aupro"]):
        fpr, pro = pro_curve(masks, maps)
        acc, _ = _binned(masks, maps, bits=23)
        f2, p2 = acc.pro_curve()
        np.testing.assert_allclose(f2, fpr, atol=1e-12)
        np.testing.assert_allclose(p2, pro, atol=1e-12)


def test_distinct_values_give_zero_bound_and_chunking_does_not_matter():
    rng = np.random.default_rng(3)
    vals = rng.permutation(np.arange(1, 40 * 30 * 4 + 1, dtype=np.float32)).reshape(4, 30, 40)
    masks = [None, vals[1] > 3000, np.zeros((30, 40), bool), vals[3] > 4000]
    maps = list(vals)
    _, a = _binned(masks, maps, chunk=1, bits=23)
    _, b = _binned(masks, maps, chunk=4, bits=23)
    assert a == b
    assert a["pixel_metrics_max_error"] == {"pixel_auroc": 0.0, "pixel_ap": 0.0, "aupro": 0.0}


def test_ties_are_exact_with_zero_bound_even_on_a_coarse_grid():
    rng = np.random.default_rng(7)
    maps = [rng.integers(0, 5, (9, 11)).astype(np.float32) for _ in range(5)]
    masks = [rng.random((9, 11)) > 0.6 for _ in range(4)] + [None]
    exact = evaluate_anomaly([True] * 4 + [False], np.arange(5.0), masks, maps)
    _, got = _binned(masks, maps, bits=2)
    for k in KEYS:
        assert got[k] == pytest.approx(exact[k], abs=1e-12)
        assert got["pixel_metrics_max_error"][k] == 0.0


def test_float64_values_in_one_float32_bin_count_as_distinct():
    """1 and 1 + 1e-12 share a float32 bin but are not a tie: the bound must cover the gap."""
    maps = [np.array([[1.0, 1.0 + 1e-12, 0.0]]), np.array([[1.0 + 1e-12, 1.0, 0.5]])]
    masks = [np.array([[False, True, False]]), np.array([[True, False, False]])]
    exact = evaluate_anomaly([True, True], [0.0, 1.0], masks, maps, nan_on_undefined=True)
    _, got = _binned(masks, maps, bits=23)
    for k in KEYS:
        assert got["pixel_metrics_max_error"][k] > 0
        assert abs(got[k] - exact[k]) <= got["pixel_metrics_max_error"][k] + 1e-12


def test_all_good_images_are_undefined_not_made_up():
    maps = [np.random.default_rng(i).random((8, 8)).astype(np.float32) for i in range(3)]
    acc, got = _binned([None, np.zeros((8, 8), bool), None], maps)
    assert all(np.isnan(got[k]) for k in KEYS)
    with pytest.raises(UndefinedMetricError, match="pixel AUROC"):
        acc.metrics()


def test_negative_zero_and_negatives_order_like_floats():
    maps = [np.array([[-0.0, 0.0, -1.5, 2.0]], np.float32), np.array([[-3.0, 1e-30, -1e-30, 0.0]], np.float32)]
    masks = [np.array([[True, False, False, True]]), np.array([[False, True, False, False]])]
    exact = evaluate_anomaly([True, False], [1.0, 0.0], masks, maps)
    _, got = _binned(masks, maps, bits=23)
    for k in KEYS:
        assert got[k] == pytest.approx(exact[k], abs=1e-12)


def test_memory_is_bounded_by_bins_not_images():
    rng = np.random.default_rng(0)
    acc = PixelAccumulator(mantissa_bits=6)
    for _ in range(30):
        acc.add([rng.random((64, 64)) > 0.95] * 4, [rng.random((64, 64)).astype(np.float32) * 10 for _ in range(4)])
    after_30 = acc.keys.size
    for _ in range(30):
        acc.add([rng.random((64, 64)) > 0.95] * 4, [rng.random((64, 64)).astype(np.float32) * 10 for _ in range(4)])
    # values in [0, 10): the top octaves hold at most 64 bins each; pixels doubled, bins did not
    assert acc.keys.size <= 2 ** (9 + 6) and acc.keys.size < 1.2 * after_30 + 64
    assert acc.n_images == 240 and sum(acc.counts()) == 240 * 64 * 64
    q = accumulator_quantile(acc, 0.5)
    assert abs(q - 5.0) < 0.2  # median of uniform [0, 10), to within a bin (1/64 of the value)


def test_path_choice_and_bad_values():
    assert choose_pixel_path("auto", 10, 100) == "exact"
    assert choose_pixel_path("auto", 101, 100) == "binned"
    assert choose_pixel_path("exact", 10**12, 100) == "exact"
    assert choose_pixel_path("binned", 1, 100) == "binned"
    with pytest.raises(ConfigError, match="pixel path"):
        choose_pixel_path("fast", 1)
    with pytest.raises(ValueError, match="NaN"):
        PixelAccumulator().add([None], [np.array([[1.0, np.nan]], np.float32)])


# ------------------------------------------------------------------ detect eval end to end


class MapDetector:
    """A stand-in detector that honours the prediction contract: the map is the image's first
    channel (so defects painted bright score high) and the score is the map's maximum."""

    name = "map"
    input_size_ = (48, 64)
    threshold_ = 0.6
    pixel_threshold_ = 0.55

    def predict(self, samples):
        maps = [s.image.astype(np.float32)[..., 0] / 255.0 for s in samples]
        return SimpleNamespace(pred_score=np.array([m.max() for m in maps]), anomaly_map=maps)


def _samples(n, seed=0, hw=(24, 32)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 150, (*hw, 3)).astype(np.uint8)
        if i % 3 == 0:
            out.append(Sample(label="good", split="test", image_array=img, meta={"name": f"g{i}"}))
            continue
        m = np.zeros(hw, bool)
        y, x = rng.integers(0, hw[0] - 6), rng.integers(0, hw[1] - 6)
        m[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = True
        img[m] = rng.integers(100, 256)
        out.append(Sample(label="dent", split="test", image_array=img, mask_array=m, meta={"name": f"d{i}"}))
    return out


def test_eval_binned_agrees_with_exact_and_records_the_path():
    from defectforge.detect.evaluate import evaluate_detector, metrics_json

    data = _samples(40)
    ex = evaluate_detector(MapDetector(), data, chunk=7, pixel_path="exact")
    bi = evaluate_detector(MapDetector(), data, chunk=7, pixel_path="binned")
    auto = evaluate_detector(MapDetector(), data, chunk=7, pixel_budget=40 * 48 * 64 - 1)
    assert ex["metrics"]["pixel_metrics_path"] == "exact"
    assert bi["metrics"]["pixel_metrics_path"] == auto["metrics"]["pixel_metrics_path"] == "binned"
    for k in KEYS:
        assert abs(bi["metrics"][k] - ex["metrics"][k]) <= bi["metrics"]["pixel_metrics_max_error"][k] + 1e-12
        assert bi["metrics"][k] == auto["metrics"][k]
    for k in ("image_auroc", "image_ap", "f1_max", "pixel_f1_at_threshold"):
        assert bi["metrics"][k] == pytest.approx(ex["metrics"][k], abs=1e-12)
    assert bi["pixel_confusion"] == ex["pixel_confusion"]
    assert [c for _, c in bi["examples"]] == [c for _, c in ex["examples"]]
    for (a, _), (b, _) in zip(bi["examples"], ex["examples"]):
        np.testing.assert_array_equal(a, b)  # same maps, same colour scale (pixel threshold set)
    js = json.loads(json.dumps(metrics_json(bi), default=float))
    assert js["pixel_metrics_path"] == "binned" and set(js["pixel_metrics_max_error"]) == set(KEYS)
    assert json.loads(json.dumps(metrics_json(ex), default=float))["pixel_metrics_path"] == "exact"
    io = evaluate_detector(MapDetector(), data, pixel_metrics=False)
    assert io["metrics"]["pixel_metrics_path"] == "not computed" and len(io["examples"]) == len(ex["examples"])


def test_eval_binned_does_not_hold_all_maps():
    """The binned path's peak memory does not grow with the number of images (one chunk, the
    histograms and the example maps); the exact path's holds every map (100 maps of 192x256
    float32 are 20 MB)."""
    from defectforge.detect.evaluate import evaluate_detector

    peaks = {}
    for path, n in (("binned", 100), ("binned", 200), ("exact", 100)):
        data = _samples(n, seed=1)
        tracemalloc.start()
        res = evaluate_detector(MapDetector(), data, chunk=8, eval_size=(192, 256), pixel_path=path)
        peaks[path, n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert res["metrics"]["pixel_metrics_path"] == path
    assert peaks["exact", 100] > 100 * 192 * 256 * 4
    assert peaks["binned", 200] < 1.25 * peaks["binned", 100], peaks
    assert peaks["binned", 200] < peaks["exact", 100] / 4, peaks


def test_cli_records_the_path_and_refuses_an_unknown_one(tmp_path):
    from badinput_kit import fit_tiny_model, invoke, one_line_error, small_manifest

    model = fit_tiny_model(tmp_path / "m")
    root = small_manifest(tmp_path / "ds", n_good=3, n_defect=3).parent
    got = {}
    for path in ("exact", "binned"):
        js = tmp_path / f"{path}.json"
        res = invoke("detect", "eval", model, root, "--json", js, "--pixel-path", path)
        assert res.exit_code == 0, res.output
        got[path] = json.loads(js.read_text())
        assert got[path]["pixel_metrics_path"] == path
    err = got["binned"]["pixel_metrics_max_error"]
    for k in KEYS:
        assert abs(got["binned"][k] - got["exact"][k]) <= err[k] + 1e-12
    one_line_error(invoke("detect", "eval", model, root, "--pixel-path", "fast"), "pixel path")
