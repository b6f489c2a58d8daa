"""The operator contract, checked for every registered 3D operator (``OPERATORS``).

For each: its spec is consistent (defaults inside bounds, integer parameters among its
parameters, a known primitive family), the instruction schema lists it and accepts it
without repeating any operator fact, sampled parameters honour its integer parameters,
an unknown or impossible parameter is a one-line ``ConfigError`` naming the instruction,
and running it through the instruction pipeline is seeded and gives labels aligned with
the output points that mark exactly the operator's mask.

A newly registered operator is covered without editing this file.
"""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.errors import ConfigError
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.instructions import (DefectSpec, instruction_json_schema, sample_params, synthesize,
                                              validate_instructions)
from defectforge.synth3d.operators import CHOICE_PARAMS, OPERATORS, apply
from defectforge.synth3d.parts import make_part

NAMES = OPERATORS.names()


@pytest.fixture(scope="module")
def part() -> PointCloud:
    return make_part("plate_pockets", 4000, np.random.default_rng(3))


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_consistent(name):
    op = OPERATORS[name]
    assert op.primitive in ("1D", "2D", "3D")
    assert set(op.defaults) <= set(op.bounds) and set(op.int_params) <= set(op.bounds)
    for key, (lo, hi) in op.defaults.items():
        blo, bhi = op.bounds[key]
        assert blo <= lo <= hi <= bhi, (key, (lo, hi), (blo, bhi))
    assert 0.0 <= op.mask_fraction[0] < op.mask_fraction[1] <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_derived_from_the_registry(name):
    schema = instruction_json_schema()
    assert name in schema["$defs"]["DefectSpec"]["properties"]["type"]["enum"]
    inst = validate_instructions({"defects": [{"type": name}]})
    assert inst.defects[0].primitive == OPERATORS[name].primitive
    other = next(p for p in ("1D", "2D", "3D") if p != OPERATORS[name].primitive)
    with pytest.raises(ConfigError, match=f"{OPERATORS[name].primitive} primitive"):
        validate_instructions({"defects": [{"type": name, "primitive": other}]})


@pytest.mark.parametrize("name", NAMES)
def test_sampled_params_honour_the_spec(name):
    op = OPERATORS[name]
    spec = DefectSpec(type=name)
    for seed in range(5):
        p = sample_params(spec, np.random.default_rng(seed))
        assert set(p) == set(op.defaults)
        for key, (lo, hi) in op.defaults.items():
            assert lo <= p[key] <= hi or (key in op.int_params and round(lo) <= p[key] <= round(hi))
            assert isinstance(p[key], int) == (key in op.int_params)


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_are_one_line(name):
    key = next(iter(OPERATORS[name].bounds))
    lo, hi = OPERATORS[name].bounds[key]
    for params, match in (({"no_such_param": 1.0}, "unknown parameter 'no_such_param'"),
                          ({key: hi + abs(hi) + 1.0}, "impossible size")):
        with pytest.raises(ConfigError, match=match) as exc:
            validate_instructions({"defects": [{"type": name, "params": params}]})
        assert "\n" not in str(exc.value) and f"instruction 1 ({name})" in str(exc.value)
    assert set(CHOICE_PARAMS).isdisjoint(OPERATORS[name].bounds)


@pytest.mark.parametrize("name", NAMES)
def test_runs_seeded_with_aligned_exact_labels(name, part):
    inst = validate_instructions({"defects": [{"type": name}]})
    a, rec_a = synthesize(part, inst, np.random.default_rng(7))
    b, rec_b = synthesize(part, inst, np.random.default_rng(7))
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert rec_a == rec_b and rec_a[0]["type"] == name
    assert a.labels.shape == (len(a.points),) and 0 < int(a.labels.sum()) == rec_a[0]["n_mask"]
    assert np.isfinite(a.points).all() and a.normals is not None and a.normals.shape == a.points.shape


def test_unknown_operator_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown operator 'melt'; available: " + ", ".join(NAMES)):
        apply("melt", np.zeros((10, 3)), None, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"'melt' is not a registered operator"):
        validate_instructions({"defects": [{"type": "melt"}]})
