"""Context-matched placement of transplanted real defects (``transplant --placement context``)."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.data.sample import Sample
from defectforge.errors import ConfigError
from defectforge.synth2d import RealDefect, get_generator
from defectforge.synth2d import masks as mk
from defectforge.synth2d import placement as PL
from defectforge.synth2d.engine import generate_samples, real_defects_from

NOJIT = {"rotate": 0.0, "scale": (1.0, 1.0), "flip": False, "color": 0.0}


def _stripes(h: int, w: int, vertical: bool, period: float = 10.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return 128 + 60 * np.sin(2 * np.pi * (xx if vertical else yy) / period)


def _rgb(grey: np.ndarray, seed: int) -> np.ndarray:
    g = grey + np.random.default_rng(seed).normal(0, 3, grey.shape)
    return np.clip(np.repeat(g[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def _defect_on(grey: np.ndarray, seed: int = 9) -> Sample:
    """A real defect image: a dark disc in the middle of ``grey``."""
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w]
    m = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= 36
    img = _rgb(grey, seed)
    img[m] = (img[m] * 0.3).astype(np.uint8)
    return Sample(label="pitting", image_array=img, mask_array=m, meta={"name": "real"})


def _centres(samples: list[Sample]) -> np.ndarray:
    return np.array([np.argwhere(s.mask).mean(0) for s in samples])


def test_striped_surround_lands_on_stripes_not_on_flat():
    h, w = 120, 240
    host = np.full((h, w), 128.0, np.float32)
    host[:, : w // 2] = _stripes(h, w // 2, vertical=False)  # left half striped, right half flat
    real = _defect_on(_stripes(90, 90, vertical=False))
    kw = dict(real_defects=[real], roi="border", defect_type="pitting", **NOJIT)
    ctx = _centres(generate_samples([_rgb(host, 1)], "transplant", 40, seed=3, placement="context", **kw))
    rnd = _centres(generate_samples([_rgb(host, 1)], "transplant", 40, seed=3, **kw))
    on_stripes_ctx = float((ctx[:, 1] < w // 2).mean())
    on_stripes_rnd = float((rnd[:, 1] < w // 2).mean())
    assert on_stripes_ctx >= 0.9
    assert on_stripes_ctx > on_stripes_rnd + 0.25


@pytest.mark.parametrize("gen", ["transplant", "fitted"])
def test_stripe_direction_is_matched_when_levels_are_equal(gen):
    """Same brightness and contrast in both halves: only the pattern (its direction) tells."""
    h, w = 200, 160
    host = np.vstack([_stripes(h // 2, w, vertical=False), _stripes(h // 2, w, vertical=True)])
    real = _defect_on(_stripes(90, 90, vertical=True))
    jit = NOJIT if gen == "transplant" else {"rotate": 0.0, "scale": (1.0, 1.0), "flip": False, "elastic": 0.0}
    kw = dict(real_defects=[real], roi="border", **jit)
    ctx = _centres(generate_samples([_rgb(host, 2)], gen, 40, seed=5, placement="context", **kw))
    assert float((ctx[:, 0] >= h // 2).mean()) >= 0.9  # the vertical-stripe half
    if gen == "fitted":  # its own placement (location prior x host similarity) is the baseline
        base = _centres(generate_samples([_rgb(host, 2)], gen, 40, seed=5, placement="prior", similarity=0.0, **kw))
        assert float((ctx[:, 0] >= h // 2).mean()) > float((base[:, 0] >= h // 2).mean()) + 0.25


def test_resample_cubic_changes_the_pixels_seeded_and_checked():
    real = _defect_on(_stripes(90, 90, vertical=False))
    host = [_rgb(np.full((96, 128), 128.0), 0)]
    kw = dict(real_defects=[real], roi="border", rotate=30.0)
    lin = generate_samples(host, "transplant", 3, seed=2, **kw)
    cub = generate_samples(host, "transplant", 3, seed=2, resample="cubic", **kw)
    cub2 = generate_samples(host, "transplant", 3, seed=2, resample="cubic", **kw)
    assert all(np.array_equal(a.rgb(), b.rgb()) for a, b in zip(cub, cub2))
    assert any(not np.array_equal(a.rgb(), b.rgb()) for a, b in zip(lin, cub))
    with pytest.raises(ConfigError):
        get_generator("transplant", resample="nearest")


def test_same_seed_same_output_and_seed_matters():
    h, w = 120, 240
    host = _rgb(np.hstack([_stripes(h, w // 2, False), np.full((h, w // 2), 128.0)]), 4)
    real = _defect_on(_stripes(90, 90, vertical=False))

    def run(seed):
        return generate_samples([host], "transplant", 6, seed=seed, real_defects=[real], roi="border",
                                placement="context", orient=2)

    a, b, c = run(11), run(11), run(12)
    assert all(np.array_equal(x.rgb(), y.rgb()) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert any(not np.array_equal(x.mask, y.mask) for x, y in zip(a, c))


def test_without_surround_falls_back_to_random_placement():
    img = _rgb(_stripes(40, 40, False), 3)
    m = np.zeros((40, 40), bool)
    m[15:25, 15:25] = True
    g = get_generator("transplant", placement="context").fit([RealDefect(img, m, "r", (0.5, 0.5), (40, 40))])
    res = g.generate(_rgb(np.full((96, 128), 120.0), 0), np.random.default_rng(0))
    assert res.mask.any() and res.meta["context_score"] is None


def test_surround_validity_excludes_image_border_and_other_defects():
    img = _rgb(np.full((60, 80), 100.0), 0)
    defects = np.zeros((60, 80), bool)
    defects[2:8, 2:10] = True  # this component, at the image corner
    defects[20:24, 20:24] = True  # another defect in the window
    comp, box = mk.components(defects)[0]
    s = PL.cut_surround(img, defects, comp, box)
    assert s.px == 1.0 and s.rgba.shape == (32, 32, 4)  # SURROUND_MIN
    a = s.rgba[..., 3]
    assert a[0, 0] == 0  # outside the image
    assert (a[s.mask > 0] == 0).all()  # on the defect itself
    big = PL.cut_surround(np.zeros((400, 400, 3), np.uint8), np.ones((400, 400), bool), np.ones((100, 100), bool),
                          (150, 150, 250, 250))
    assert big.rgba.shape[0] == PL.SURROUND_PX and big.px == pytest.approx(300 / PL.SURROUND_PX)


def test_real_defects_carry_a_surround():
    real = _defect_on(_stripes(90, 90, vertical=False))
    reals, _ = real_defects_from([real])
    assert len(reals) == 1 and isinstance(reals[0].surround, PL.Surround)


@pytest.mark.parametrize("params, word", [({"placement": "nearby"}, "placement"), ({"top": 0.0}, "top"),
                                          ({"window": 9.0}, "window"), ({"candidates": 0}, "candidates"),
                                          ({"level": -1}, "level"), ({"orient": 20}, "orient"),
                                          ({"gen": "fitted", "placement": "random"}, "placement"),
                                          ({"gen": "fitted", "top": 2.0}, "top")])
def test_bad_placement_options_are_one_line_config_errors(params, word):
    params = dict(params)
    with pytest.raises(ConfigError) as e:
        get_generator(params.pop("gen", "transplant"), **params)
    assert word in str(e.value) and len(str(e.value).splitlines()) == 1
