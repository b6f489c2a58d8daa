"""Instruction schema, validation, locations, execution and the rule-based parser."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectforge.errors import ConfigError, InputError
from defectforge.synth3d.describe import parse_description
from defectforge.synth3d.instructions import (InstructionSet, instruction_json_schema, load_instructions, synthesize,
                                              validate_instructions)
from defectforge.synth3d.parts import make_part


@pytest.fixture(scope="module")
def flange():
    return make_part("flange", 8000, np.random.default_rng(2))


def test_json_schema_export_names_every_type():
    schema = instruction_json_schema()
    text = json.dumps(schema)
    for t in ("scratch", "dent", "bend", "crack", "freeform", "region", "box", "point"):
        assert t in text
    assert schema["title"] == "InstructionSet"


@pytest.mark.parametrize("defect,match", [
    ({"type": "dent", "params": {"radius": 0.6}}, r"instruction 1 \(dent\): impossible size radius=0.6"),
    ({"type": "scratch", "params": {"colour": 3}}, r"unknown parameter 'colour'"),
    ({"type": "scratch", "params": {"width": [0.02, 0.01]}}, r"low > high"),
    ({"type": "melt"}, r"instruction 1 \(melt\): type"),
    ({"type": "bend", "primitive": "1D"}, r"2D primitive"),
    ({"type": "dent", "location": {"kind": "box", "min": [0.5, 0, 0], "max": [0.2, 1, 1]}}, "exceeds max"),
    ({"type": "dent", "count": 0}, "count"),
    ({"type": "scratch", "params": {"profile": "zigzag"}}, "profile"),
])
def test_validation_errors_name_instruction_and_reason(defect, match):
    with pytest.raises(ConfigError, match=match):
        validate_instructions({"defects": [{"type": "bump"}, defect][1:]})


def test_second_instruction_is_named():
    with pytest.raises(ConfigError, match=r"instruction 2 \(my dent\)"):
        validate_instructions({"defects": [{"type": "bump"}, {"type": "dent", "name": "my dent", "params": {"depth": 5}}]})


def test_load_yaml_and_json_files(tmp_path):
    y = tmp_path / "i.yaml"
    y.write_text("version: 1\ndefects:\n  - type: scratch\n    location: top\n    params: {length: [0.1, 0.2]}\n    count: 2\n")
    inst = load_instructions(y)
    assert inst.defects[0].count == 2 and inst.defects[0].location.name == "top"
    assert inst.defects[0].params["length"] == (0.1, 0.2)
    j = tmp_path / "i.json"
    j.write_text(json.dumps({"defects": [{"type": "dent", "params": {"radius": 9}}]}))
    with pytest.raises(ConfigError, match=r"i.json: instruction 1 \(dent\)"):
        load_instructions(j)
    bad = tmp_path / "b.yaml"
    bad.write_text("defects: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_instructions(bad)


def test_synthesize_labels_align_and_regions_are_respected(flange):
    inst = validate_instructions({"defects": [
        {"type": "scratch", "location": "top", "count": 2, "params": {"length": 0.15}},
        {"type": "dent", "location": {"kind": "region", "name": "hole"}, "params": {"radius": 0.03}},
    ]})
    out, records = synthesize(flange, inst, np.random.default_rng(0))
    assert len(out) == len(flange) and out.labels.shape == (len(flange),)
    motion = np.linalg.norm(out.points - flange.points, axis=1)
    lab = out.labels.astype(bool)
    thr = [r["label_threshold_abs"] for r in records]
    assert all(t == pytest.approx(0.001 * flange.diag, rel=1e-3) for t in thr)  # recorded per defect
    assert motion[lab].min() >= min(thr) and motion[~lab].max() < sum(thr)  # labels = real motion
    assert [r["type"] for r in records] == ["scratch", "scratch", "dent"]
    tags = flange.meta["tags"]
    assert tags[records[0]["center_index"]] == 0 and tags[records[2]["center_index"]] == 3  # top, hole
    out2, _ = synthesize(flange, inst, np.random.default_rng(0))
    np.testing.assert_array_equal(out.points, out2.points)


@pytest.mark.parametrize("loc,match", [
    ({"kind": "box", "min": [1.5, 1.5, 1.5], "max": [2, 2, 2]}, "misses the part"),
    ({"kind": "point", "xyz": [1000.0, 0, 0], "radius": 0.05}, "misses the part"),
])
def test_location_missing_the_part(flange, loc, match):
    inst = validate_instructions({"defects": [{"type": "dent", "location": loc}]})
    with pytest.raises(ConfigError, match=rf"instruction 1 \(dent\): .*{match}"):
        synthesize(flange, inst, np.random.default_rng(0))


def test_region_absent_on_part():
    shaft = make_part("stepped_shaft", 4000, np.random.default_rng(0))  # no holes
    inst = validate_instructions({"defects": [{"type": "dent", "location": "hole"}]})
    with pytest.raises(ConfigError, match="region 'hole' does not exist"):
        synthesize(shaft, inst, np.random.default_rng(0))


def test_impossible_mask_fraction_reports_every_reason(flange):
    inst = validate_instructions({"max_attempts": 3, "defects": [
        {"type": "dent", "params": {"radius": 0.2}, "mask_fraction": [0.0, 0.001]}]})
    with pytest.raises(ConfigError, match=r"instruction 1 \(dent\): impossible on this part after 3 attempts.*mask covers"):
        synthesize(flange, inst, np.random.default_rng(0))


def test_box_location_in_normalised_coordinates(flange):
    inst = validate_instructions({"defects": [{"type": "bump", "location": {"kind": "box", "min": [0.8, 0, 0],
                                                                             "max": [1, 1, 1]}}]})
    _, rec = synthesize(flange, inst, np.random.default_rng(1))
    lo, hi = flange.points.min(0), flange.points.max(0)
    assert (np.asarray(rec[0]["center"])[0] - lo[0]) / (hi[0] - lo[0]) >= 0.8


@pytest.mark.parametrize("text,expected", [
    ("two 5 mm scratches on the top face and a dent near the hole",
     [("scratch", 2, "top", {"length": 0.05}), ("dent", 1, "hole", {})]),
    ("a 3 mm pit on the edge, 3 bumps", [("pit", 1, "edge", {"radius": 0.015}), ("bump", 3, None, {})]),
    ("a 15 deg bend", [("bend", 1, None, {"angle": 15.0})]),
    ("a crack of 20% on the bottom; several shallow dents",
     [("crack", 1, "bottom", {"length": 0.2}), ("dent", 3, None, {"depth": (0.003, 0.0075)})]),
])
def test_rule_based_parser(text, expected):
    inst = parse_description(text, part_diag=100.0)
    assert isinstance(inst, InstructionSet) and len(inst.defects) == len(expected)
    for d, (t, count, region, params) in zip(inst.defects, expected):
        assert (d.type, d.count) == (t, count)
        assert (d.location.name if d.location.kind == "region" else None) == region
        for k, v in params.items():
            assert d.params[k] == pytest.approx(v)


@pytest.mark.parametrize("text,match", [
    ("a wobbly thing", "cannot find a defect type"),
    ("a 5 mm dent", "part size is unknown"),
    ("a 500 mm scratch", r"impossible size length=5"),
    ("a 5 deg dent", "angle only makes sense for a bend"),
    ("", "empty"),
])
def test_parser_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_description(text, part_diag=None if "5 mm dent" in text else 100.0)


@pytest.mark.parametrize("text,count", [("twenty five dents", 25), ("twenty-five dents", 25), ("a dozen pits", 12),
                                        ("fifteen scratches", 15), ("forty bumps", 40), ("two dents", 2),
                                        ("25 dents", 25)])
def test_number_words(text, count):
    assert parse_description(text).defects[0].count == count


@pytest.mark.parametrize("text,found", [("a 3 mm scratch", True), ("a 0.5 inch dent", True), ("a 10 % dent", False),
                                        ("a 15 deg bend", False), ("two dents", False)])
def test_absolute_sizes_are_recognised(text, found):
    from defectforge.synth3d.describe import has_absolute_sizes

    assert has_absolute_sizes(text) is found


def test_impossible_absolute_size_names_units_and_fix():
    with pytest.raises(ConfigError) as exc:
        parse_description("a 30 mm scratch", part_diag=0.25, size_hint="pass --units or --part-diag")
    msg = str(exc.value)
    assert "impossible size length=120 (x diag)" in msg and "0.25 mm" in msg and "--units" in msg
    assert parse_description("a 1 inch scratch", part_diag=254.0).defects[0].params["length"] == pytest.approx(0.1)


@pytest.mark.parametrize("loc,match", [
    ({"kind": "point", "xyz": [float("nan"), 0, 0]}, r"location.point.xyz.0: Input should be a finite number"),
    ({"kind": "point", "xyz": [0, float("inf"), 0]}, r"location.point.xyz.1: Input should be a finite number"),
    ({"kind": "point", "xyz": [1e308, 1e308, 1e308], "normalized": True}, r"must lie within -10..10"),
    ({"kind": "box", "min": [float("nan"), 0, 0], "max": [1, 1, 1]}, r"finite number"),
])
def test_non_finite_or_absurd_point_is_refused(loc, match):
    with pytest.raises(ConfigError, match=match):
        validate_instructions({"version": 1, "defects": [{"type": "scratch", "location": loc}]})


def test_instruction_file_with_nan_point_is_one_line_naming_it(tmp_path):
    from badinput_kit import invoke, one_line_error

    f = tmp_path / "pt.yaml"
    f.write_text("version: 1\ndefects:\n- type: scratch\n  location: {kind: point, xyz: [.nan, 0, 0]}\n")
    res = invoke("synth3d", "part:flange", "-o", tmp_path / "o", "--n", "1", "--points", "2000", "-i", f)
    one_line_error(res, "pt.yaml", "instruction 1 (scratch)", "finite")
