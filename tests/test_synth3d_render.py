"""The point renderer and the demo report section."""

from __future__ import annotations

import numpy as np

from defectforge.synth3d.parts import make_part
from defectforge.synth3d.render import render_cloud


def test_render_cloud_shapes_and_mask_colour():
    part = make_part("hex_bolt", 3000, np.random.default_rng(0))
    plain = render_cloud(part.points)
    assert plain.shape == (360, 480, 3) and plain.dtype == np.uint8
    mask = part.points[:, 2] > np.median(part.points[:, 2])
    red = render_cloud(part.points, mask, size=(200, 150), normals=part.normals)
    assert red.shape == (150, 200, 3)
    is_red = (red[..., 0] > 150) & (red[..., 1] < 90)
    assert is_red.sum() > 100 and not ((plain[..., 0] > 150) & (plain[..., 1] < 90)).any()
    # the masked (upper) half of the bolt is drawn in the upper half of the image
    ys = np.nonzero(is_red)[0]
    assert ys.mean() < 75
    scored = render_cloud(part.points, scores=part.points[:, 2])
    assert len(np.unique(scored.reshape(-1, 3), axis=0)) > 20
    assert (render_cloud(np.zeros((0, 3))) == 255).all()


def test_demo_section_adds_a_report_section(tmp_path):
    from defectforge.report import Report
    from defectforge.synth3d import demo_section

    rep = Report("demo", tmp_path)
    out = demo_section(rep, tmp_path, seed=1, n_points=3000, size=(160, 120))
    assert "synth3d" in rep.sections and len(out["rows"]) == 6
    assert all(r["mask points"] > 0 for r in out["rows"])
    html = rep.save().read_text()
    assert "3D synthesis" in html and len(list((tmp_path / "assets" / "synth3d").glob("*.png"))) == 6
