"""Host choice (``source.hosts``): synthetic defects only on the good images most like the
real defect images."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.data.image_io import write_image, write_mask
from defectforge.errors import ConfigError
from defectforge.synth2d import parse_config, synthesize
from defectforge.synth2d.engine import prepare
from defectforge.synth2d.hosts import choose_hosts, host_distances, image_descriptor

H, W = 96, 128


def _flat(seed: int) -> np.ndarray:
    """A bright, smooth surface."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    g = 170 + 20 * xx / W + rng.normal(0, 2, (H, W))
    return np.clip(np.repeat(g[..., None], 3, 2), 0, 255).astype(np.uint8)


def _worn(seed: int) -> np.ndarray:
    """A darker, finely textured surface (stripes and grain)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    g = 90 + 30 * np.sin((xx + yy) / 2.5) + rng.normal(0, 12, (H, W))
    return np.clip(np.repeat(g[..., None], 3, 2), 0, 255).astype(np.uint8)


def _data(root, n_flat=6, n_worn=2):
    """Good images: ``n_flat`` flat ones, then ``n_worn`` worn ones; two worn defect images."""
    rows = ["file,split,label,mask"]
    goods = [("flat", _flat(i)) for i in range(n_flat)] + [("worn", _worn(100 + i)) for i in range(n_worn)]
    for i, (kind, img) in enumerate(goods):
        write_image(root / "images" / f"good{i}_{kind}.png", img)
        rows.append(f"images/good{i}_{kind}.png,train,good,")
    for i in range(2):
        img = _worn(200 + i)
        m = np.zeros((H, W), bool)
        m[40:52, 50:62] = True
        img[m] = (img[m] * 0.4).astype(np.uint8)
        write_image(root / "images" / f"pit{i}.png", img)
        write_mask(root / "masks" / f"pit{i}.png", m)
        rows.append(f"images/pit{i}.png,train,pitting,masks/pit{i}.png")
    (root / "split.csv").write_text("\n".join(rows) + "\n")
    return root


def _cfg(data, hosts="similar", top=0.25, n=12, gen="pitting", **src):
    return parse_config({"source": {"path": str(data), "roi": "border", "roi_margin": 4, "hosts": hosts,
                                    "hosts_top": top, **src},
                         "generators": [{"name": gen}], "n": n, "seed": 3})


def test_the_nearest_images_are_kept_and_ties_go_to_the_first():
    worn = [_worn(i) for i in range(3)]
    flat = [_flat(i) for i in range(5)]
    keep, d = choose_hosts(flat[:2] + worn[:2] + flat[2:], [worn[2]], 0.25)
    assert keep.tolist() == [2, 3]  # the two worn goods, wherever they sit in the list
    assert d[[2, 3]].max() < d[[0, 1, 4, 5, 6]].min()
    keep1, _ = choose_hosts(flat, [worn[0]], 0.01)  # at least one image
    assert len(keep1) == 1
    same = [flat[0]] * 4
    assert choose_hosts(same, [worn[0]], 0.5)[0].tolist() == [0, 1]


def test_descriptor_and_distances_are_finite_for_flat_and_odd_sized_images():
    a = image_descriptor(np.full((7, 300, 3), 128, np.uint8))
    b = image_descriptor(np.full((40, 40), 5, np.uint8))
    assert a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all()
    d = host_distances(np.stack([a, a]), np.stack([a]))  # constant features: no division by 0
    assert np.isfinite(d).all() and np.allclose(d, 0.0)


def test_similar_hosts_receive_every_sample_and_the_card_says_so(tmp_path):
    data = _data(tmp_path / "d")
    run = synthesize(_cfg(data), tmp_path / "out", workers=1)
    used = {s.meta["source"] for s in run.samples}
    assert run.samples and used <= {"good6_worn", "good7_worn"}
    card = (tmp_path / "out" / "dataset_card.md").read_text()
    assert "hosts: the 2 of 8 good images most like the real defect images" in card
    every = synthesize(_cfg(data, hosts="all", n=24), tmp_path / "all", workers=1)
    assert any("flat" in s.meta["source"] for s in every.samples)


def test_the_default_draw_and_fingerprint_are_those_of_a_config_without_the_option(tmp_path):
    data = _data(tmp_path / "d")
    base = {"source": {"path": str(data), "roi": "border"}, "generators": [{"name": "pitting"}], "n": 5, "seed": 1}
    plain = parse_config(base)
    explicit = parse_config({**base, "source": {**base["source"], "hosts": "all", "hosts_top": 0.5}})
    similar = parse_config({**base, "source": {**base["source"], "hosts": "similar"}})
    assert plain.fingerprint() == explicit.fingerprint() != similar.fingerprint()
    engine, facts = prepare(plain)
    assert engine.hosts is None and facts["hosts"] == {"mode": "all", "kept": 8, "of": 8}
    engine2, facts2 = prepare(similar)
    assert engine2.hosts == [6, 7] and facts2["hosts"]["kept"] == 2
    # same seed, same sample index: only the host differs (drawn from the kept ones)
    a, b = engine.make(0, encode=False), engine2.make(0, encode=False)
    assert b.source in {"good6_worn", "good7_worn"} and a.seed == b.seed


def test_similar_without_real_defects_is_a_one_line_error(tmp_path):
    data = _data(tmp_path / "d")
    with pytest.raises(ConfigError, match="hosts: similar needs real defect images"):
        prepare(_cfg(data, real_defects=False, gen="scratch"))
    with pytest.raises(ConfigError, match="hosts_top"):
        _cfg(data, top=0.0)
    with pytest.raises(ConfigError, match="hosts"):
        _cfg(data, hosts="nearest")
