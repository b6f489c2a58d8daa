"""make_part(design=...): one product with small part-to-part variation."""

import numpy as np
import pytest

from defectforge.errors import ConfigError
from defectforge.synth3d.parts import PART_NAMES, make_part


def test_a_design_fixes_discrete_choices_and_keeps_dimensions_close():
    gears = [make_part("spur_gear", 500, np.random.default_rng(s), design=3) for s in range(6)]
    teeth = {g.meta["params"]["teeth"] for g in gears}
    assert len(teeth) == 1 and gears[0].meta["design"] == 3
    modules = np.array([g.meta["params"]["module"] for g in gears])
    assert modules.std() > 0  # parts still differ ...
    assert modules.max() / modules.min() < 1.05  # ... by at most about 2 x 2 %
    holes = {make_part("flange", 500, s, design=1).meta["params"]["bolt_holes"] for s in range(6)}
    assert len(holes) == 1


def test_free_parts_differ_more_than_parts_of_one_design():
    free = np.array([make_part("spur_gear", 300, s).meta["params"]["teeth"] for s in range(8)])
    assert len(set(free.tolist())) > 1
    r_free = np.array([make_part("flange", 300, s).meta["params"]["outer_radius"] for s in range(8)])
    r_prod = np.array([make_part("flange", 300, s, design=0).meta["params"]["outer_radius"] for s in range(8)])
    assert r_prod.std() < 0.3 * r_free.std()


def test_variation_zero_gives_identical_dimensions_and_default_is_unchanged():
    a = make_part("hex_bolt", 400, 1, design=5, variation=0.0)
    b = make_part("hex_bolt", 400, 2, design=5, variation=0.0)
    assert a.meta["params"] == b.meta["params"]
    assert not np.array_equal(a.points, b.points)  # sampling still follows rng
    # design=None keeps the original draws (same rng -> same part as before the option existed)
    c, d = make_part("flange", 400, 7), make_part("flange", 400, np.random.default_rng(7))
    np.testing.assert_array_equal(c.points, d.points)
    assert "design" not in c.meta


@pytest.mark.parametrize("name", PART_NAMES)
def test_every_part_accepts_a_design(name):
    c = make_part(name, 400, 0, design=2)
    assert c.points.shape == (400, 3) and np.all(np.isfinite(c.points))


def test_bad_variation_is_refused():
    with pytest.raises(ConfigError, match="variation"):
        make_part("flange", 400, 0, design=1, variation=0.7)
