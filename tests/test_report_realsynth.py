"""Real vs synthetic defects at the same zoom, with size / position statistics, in the synth report."""

from __future__ import annotations

import re

import numpy as np
import pytest

from defectforge.data import Sample
from defectforge.report.realsynth import defect_crop, defect_stats


def _sample(h, w, box, name):
    img = np.full((h, w, 3), 120, np.uint8)
    m = np.zeros((h, w), bool)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = True
    return Sample(label="pit", split="train", image_array=img, mask_array=m, meta={"name": name})


def test_crops_keep_the_pixel_scale_and_stats_are_measured():
    small = _sample(400, 900, (100, 100, 110, 110), "small")  # 10 px defect in a large image
    big = _sample(100, 120, (40, 30, 60, 70), "big")  # 20 x 40 px defect in a small image
    edge = _sample(50, 60, (0, 0, 6, 6), "edge")
    crops = [defect_crop(s, 64) for s in (small, big, edge)]
    assert all(c.shape == (64, 64, 3) for c in crops)  # same size whatever the image size

    def outlined(c):  # extent of the red outline = the defect's size in pixels
        ys, xs = np.nonzero((c[..., 0].astype(int) - c[..., 1]) > 60)
        return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1

    assert outlined(crops[0]) == (10, 10) and outlined(crops[1]) == (20, 40)  # no resizing
    assert (crops[2][:20, :20] == 255).all()  # padded beyond the image border
    st = defect_stats([small, big])
    assert st["width"].tolist() == [10, 40] and st["height"].tolist() == [10, 20]
    assert st["area"][0] == pytest.approx(100 / (400 * 900))
    assert st["cx"][1] == pytest.approx(49.5 / 120) and st["cy"][1] == pytest.approx(49.5 / 100)
    assert defect_crop(Sample(label="good", split="train", image_array=np.zeros((8, 8, 3), np.uint8))) is None


def test_synth_report_compares_with_the_real_defects(tmp_path):
    from test_synth2d_pipeline import _cfg, make_dataset

    from defectforge.synth2d.pipeline import synthesize

    data = make_dataset(tmp_path / "data")
    synthesize(_cfg(data, n=4), tmp_path / "o", workers=1)
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Real vs synthetic defects (same zoom)" in html
    real = re.findall(r'alt="real: ([^"]+)"', html)
    syn = re.findall(r'alt="synthetic: ([^"]+)"', html)
    assert sorted(real) == ["pit0", "pit1"] and len(syn) == 4
    assert "size and position: real (blue) vs synthetic (orange)" in html
