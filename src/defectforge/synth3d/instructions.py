"""Defect instructions: a versioned pydantic schema, validation, and execution.

This is the "MLLM stage" of Synthesis4AD made dependable: whatever writes the
instructions (a YAML/JSON file, the rule-based parser in :mod:`.describe`, or an LLM
through :mod:`defectforge.llm`), they pass the same checks before anything is sampled:

1. schema (pydantic; :func:`instruction_json_schema` exports it as JSON Schema);
2. per-operator parameter names and bounds (fractions of the part diagonal);
3. the location hits the surface (a point within its radius, a box in normalised part
   coordinates containing points, a named region that exists on this part);
4. each synthesised defect's mask fraction lies within limits; a failing draw is
   resampled up to ``max_attempts`` times and, if it never succeeds, a
   :class:`~defectforge.errors.ConfigError` names the instruction and every reason seen.

Example (YAML)::

    version: 1
    defects:
      - type: scratch
        location: {kind: region, name: top}
        params: {length: [0.1, 0.2], width: 0.005}
        count: 2
      - type: dent
        location: {kind: point, xyz: [0.5, 0.5, 1.0], normalized: true, radius: 0.1}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from defectforge.errors import ConfigError, InputError
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.operators import CHOICE_PARAMS, OPERATORS, Surface, SynthesisError, apply

REGION_NAMES = ("top", "bottom", "side", "hole", "edge", "any")


def _operator_enum(schema: dict[str, Any]) -> None:
    """JSON schema of ``type``: the names registered in :data:`OPERATORS` when the schema is made."""
    schema["enum"] = OPERATORS.names()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN/inf in any number: refused


class RandomLocation(_Strict):
    kind: Literal["random"] = "random"


class RegionLocation(_Strict):
    """A named region: ``top``/``bottom`` (faces whose normal is within ~37 deg of +z/-z),
    ``side``, ``hole`` (surfaces facing back into the part: bores, pockets), ``edge``
    (sharp normal changes) or ``any``."""

    kind: Literal["region"] = "region"
    name: Literal["top", "bottom", "side", "hole", "edge", "any"]


class BoxLocation(_Strict):
    """An axis-aligned box in normalised part coordinates (0..1 along each bbox side)."""

    kind: Literal["box"] = "box"
    min: tuple[float, float, float]
    max: tuple[float, float, float]

    @model_validator(mode="after")
    def _ordered(self) -> "BoxLocation":
        if any(a > b for a, b in zip(self.min, self.max)):
            raise ValueError(f"box min {self.min} exceeds max {self.max}")
        return self


class PointLocation(_Strict):
    """A point (absolute units, or normalised 0..1 part coordinates when ``normalized``);
    the defect centre is drawn among surface points within ``radius`` x diag of it."""

    kind: Literal["point"] = "point"
    xyz: tuple[float, float, float]
    radius: float = Field(0.05, gt=0, le=1.0)
    normalized: bool = False

    @model_validator(mode="after")
    def _in_range(self) -> "PointLocation":
        if self.normalized and max(abs(v) for v in self.xyz) > 10:  # 0..1 spans the part; far beyond misses it
            raise ValueError(f"normalised coordinates {list(self.xyz)} must lie within -10..10 (0..1 spans the part)")
        return self


Location = Annotated[Union[RandomLocation, RegionLocation, BoxLocation, PointLocation], Field(discriminator="kind")]
ParamValue = Union[bool, int, float, str, tuple[float, float]]


class DefectSpec(_Strict):
    """One instruction: ``count`` defects of ``type`` at ``location`` with ``params``
    (a value or a ``[lo, hi]`` range sampled uniformly per defect)."""

    type: str = Field(json_schema_extra=_operator_enum)
    primitive: Literal["1D", "2D", "3D"] | None = None
    location: Location = Field(default_factory=RandomLocation)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    count: int = Field(1, ge=1, le=100)
    seed: int | None = Field(None, ge=0)
    name: str | None = None
    mask_fraction: tuple[float, float] | None = None

    @field_validator("location", mode="before")
    @classmethod
    def _location_shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"kind": "random"} if v in ("random", "any") else {"kind": "region", "name": v}
        return v

    @field_validator("type")
    @classmethod
    def _registered_operator(cls, v: str) -> str:
        if v not in OPERATORS:
            raise ValueError(f"{v!r} is not a registered operator; available: {', '.join(OPERATORS.names())}")
        return v

    @model_validator(mode="after")
    def _primitive_matches(self) -> "DefectSpec":
        want = OPERATORS[self.type].primitive
        if self.primitive is not None and self.primitive != want:
            raise ValueError(f"type {self.type!r} is a {want} primitive, not {self.primitive}")
        self.primitive = want
        return self


class InstructionSet(_Strict):
    """A versioned list of defect instructions applied in order (masks OR-ed)."""

    version: Literal[1] = 1
    defects: list[DefectSpec] = Field(min_length=1)
    max_attempts: int = Field(8, ge=1, le=100)


def instruction_json_schema() -> dict:
    """The instruction format as JSON Schema (for LLM prompts and editors)."""
    return InstructionSet.model_json_schema()


def _label(i: int, spec: DefectSpec | dict) -> str:
    t = spec.type if isinstance(spec, DefectSpec) else spec.get("type", "?")
    name = spec.name if isinstance(spec, DefectSpec) else spec.get("name")
    return f"instruction {i + 1} ({name or t})"


def validate_instructions(obj: Any, source: str = "instructions") -> InstructionSet:
    """Schema + bounds check; raises :class:`ConfigError` naming the instruction and reason."""
    if isinstance(obj, InstructionSet):
        data = obj.model_dump()
    elif isinstance(obj, list):
        data = {"defects": obj}
    else:
        data = obj
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'defects' list, got {type(data).__name__}")
    try:
        inst = InstructionSet.model_validate(data)
    except ValidationError as exc:
        msgs = []
        defects = data.get("defects") if isinstance(data.get("defects"), list) else []
        for err in exc.errors()[:4]:
            loc = list(err["loc"])
            where = source
            if len(loc) >= 2 and loc[0] == "defects" and isinstance(loc[1], int):
                spec = defects[loc[1]] if loc[1] < len(defects) and isinstance(defects[loc[1]], dict) else {}
                where = _label(loc[1], spec)
                loc = loc[2:]
            msgs.append(f"{where}: {'.'.join(str(x) for x in loc) or 'value'}: {str(err['msg']).removeprefix('Value error, ')}")
        raise ConfigError("; ".join(msgs)) from None
    for i, spec in enumerate(inst.defects):
        check_params(spec, i)
    return inst


def check_params(spec: DefectSpec, i: int = 0) -> None:
    """Names and values of ``spec.params`` against the operator's bounds."""
    op = OPERATORS[spec.type]
    for key, val in spec.params.items():
        if key in CHOICE_PARAMS:
            if val not in CHOICE_PARAMS[key]:
                raise ConfigError(f"{_label(i, spec)}: {key}={val!r} is not one of {list(CHOICE_PARAMS[key])}")
            continue
        if key not in op.bounds:
            allowed = sorted(set(op.bounds) | {k for k in CHOICE_PARAMS})
            raise ConfigError(f"{_label(i, spec)}: unknown parameter {key!r} for {spec.type} (allowed: {', '.join(allowed)})")
        lo, hi = op.bounds[key]
        vals = list(val) if isinstance(val, tuple) else [val]
        if isinstance(val, tuple) and val[0] > val[1]:
            raise ConfigError(f"{_label(i, spec)}: {key} range {list(val)} has low > high")
        for v in vals:
            if isinstance(v, (str, bool)) or not np.isfinite(float(v)):
                raise ConfigError(f"{_label(i, spec)}: {key}={v!r} must be a finite number")
            if not lo <= float(v) <= hi:
                raise ConfigError(f"{_label(i, spec)}: impossible size {key}={float(v):.4g} (x diag) is outside "
                                  f"the allowed range [{lo:g}, {hi:g}] for {spec.type}")
    if spec.mask_fraction is not None:
        a, b = spec.mask_fraction
        if not 0 <= a < b <= 1:
            raise ConfigError(f"{_label(i, spec)}: mask_fraction {list(spec.mask_fraction)} must satisfy 0 <= lo < hi <= 1")


def load_instructions(path: str | Path) -> InstructionSet:
    """Read and validate a YAML or JSON instruction file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "instruction file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except RecursionError:
        raise InputError(path, "nested too deeply to be an instruction file") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(path, f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}{where}: {first}") from None
    try:
        return validate_instructions(data, source=str(path))
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


# --------------------------------------------------------------------------- locations


def region_mask(surface: Surface, name: str, tags: np.ndarray | None = None,
                tag_names: tuple[str, ...] | None = None) -> np.ndarray:
    """Boolean mask of the named region on ``surface`` (part tags when available)."""
    n = surface.normals
    if name == "any":
        return np.ones(len(surface), dtype=bool)
    if tags is not None and tag_names is not None and name in tag_names:
        return tags == tag_names.index(name)
    if name == "top":
        return n[:, 2] > 0.8
    if name == "bottom":
        return n[:, 2] < -0.8
    if name == "edge":
        _, nb = surface.tree.query(surface.points, k=min(10, len(surface)))
        return np.einsum("nkj,nj->nk", n[nb], n).min(axis=1) < 0.75
    if name == "side":
        return (np.abs(n[:, 2]) < 0.3) & ~region_mask(surface, "hole")
    if name == "hole":
        # a surface faces back into the part when a short ray along its normal meets the part again
        d = surface.diag
        hit = np.zeros(len(surface), dtype=bool)
        probe = 0.015 * d
        for t in np.linspace(0.04, 0.5, 12) * d:
            dist, _ = surface.tree.query(surface.points + t * n, distance_upper_bound=probe)
            hit |= np.isfinite(dist)
        return hit
    raise ConfigError(f"unknown region {name!r}; choose one of {', '.join(REGION_NAMES)}")


def location_candidates(surface: Surface, loc: Any, tags: np.ndarray | None = None,
                        tag_names: tuple[str, ...] | None = None) -> np.ndarray:
    """Indices of admissible defect centres for ``loc``; raises if it misses the part."""
    pts = surface.points
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = np.where(hi - lo > 0, hi - lo, 1.0)
    if isinstance(loc, RandomLocation):
        return np.arange(len(pts))
    if isinstance(loc, RegionLocation):
        idx = np.flatnonzero(region_mask(surface, loc.name, tags, tag_names))
        if len(idx) == 0:
            raise SynthesisError(f"region {loc.name!r} does not exist on this part (no point qualifies)")
        return idx
    if isinstance(loc, BoxLocation):
        q = (pts - lo) / ext
        idx = np.flatnonzero(np.all((q >= np.array(loc.min)) & (q <= np.array(loc.max)), axis=1))
        if len(idx) == 0:
            raise SynthesisError(f"box {list(loc.min)}..{list(loc.max)} (normalised part coordinates) contains no "
                                 "surface point: the region misses the part")
        return idx
    if isinstance(loc, PointLocation):
        xyz = np.asarray(loc.xyz, dtype=np.float64)
        if loc.normalized:  # within -10..10 (validated) on a part within 1e15 (check_cloud): finite
            xyz = lo + xyz * (hi - lo)
        r = loc.radius * surface.diag
        idx = np.asarray(surface.tree.query_ball_point(xyz, r), dtype=np.int64)
        if len(idx) == 0:
            dist, _ = surface.tree.query(xyz)
            raise SynthesisError(f"point {list(loc.xyz)} is {dist / surface.diag:.3f} x diag from the surface, beyond "
                                 f"its radius {loc.radius}: the location misses the part")
        return idx
    raise ConfigError(f"unknown location {loc!r}")


# --------------------------------------------------------------------------- execution


def sample_params(spec: DefectSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Concrete values: operator defaults (ranges) overridden by ``spec.params``."""
    op = OPERATORS[spec.type]
    merged: dict[str, Any] = dict(op.defaults)
    merged.update(spec.params)
    out: dict[str, Any] = {}
    for key, val in merged.items():
        if isinstance(val, (tuple, list)) and len(val) == 2 and not isinstance(val, str):
            v = float(rng.uniform(float(val[0]), float(val[1])))
            if key in op.int_params:
                v = int(round(v))
            out[key] = v
        else:
            out[key] = val
    for key in op.int_params:
        if key in out:
            out[key] = int(out[key])
    return out


def synthesize(cloud: PointCloud, instructions: InstructionSet, rng: np.random.Generator, *,
               source: str = "point cloud") -> tuple[PointCloud, list[dict]]:
    """Apply every instruction to ``cloud``; returns the defective cloud (``labels`` 0/1
    aligned with its points) and one record per defect (type, attempts, sampled params,
    centre, mask size, and the reasons of rejected draws)."""
    inst = validate_instructions(instructions)
    s = Surface(cloud.points, cloud.normals, source=source)
    tags = cloud.meta.get("tags")
    tag_names = tuple(cloud.meta["tag_names"]) if "tag_names" in cloud.meta else None
    mask = np.zeros(len(s), dtype=bool)
    records: list[dict] = []
    for i, spec in enumerate(inst.defects):
        srng = np.random.default_rng(spec.seed) if spec.seed is not None else rng
        lo_f, hi_f = spec.mask_fraction or OPERATORS[spec.type].mask_fraction
        for c in range(spec.count):
            try:
                cand = location_candidates(s, spec.location, tags, tag_names)
            except SynthesisError as exc:
                raise ConfigError(f"{_label(i, spec)}: {exc}") from None
            reasons: list[str] = []
            for attempt in range(1, inst.max_attempts + 1):
                params = sample_params(spec, srng)
                center = int(cand[srng.integers(len(cand))])
                if not OPERATORS[spec.type].random_centre and isinstance(spec.location, RandomLocation):
                    center = None  # the operator places itself (bend: a hinge along the long axis)
                try:
                    res = apply(spec.type, s.points, s.normals, srng, surface=s, center=center, **params)
                except SynthesisError as exc:
                    reasons.append(str(exc))
                    continue
                frac = res.mask.sum() / len(res.mask)
                if not lo_f <= frac <= hi_f:
                    reasons.append(f"mask covers {frac:.4%} of the points, outside [{lo_f:.4%}, {hi_f:.4%}]")
                    continue
                break
            else:
                uniq = list(dict.fromkeys(reasons))
                raise ConfigError(f"{_label(i, spec)}: impossible on this part after {inst.max_attempts} attempts "
                                  f"(defect {c + 1} of {spec.count}): " + "; ".join(uniq[:3]))
            kept = res.info.get("kept")
            if kept is not None:
                mask = mask[kept]
                if tags is not None:
                    tags = tags[kept]
            mask = mask | res.mask
            info = {k: v for k, v in res.info.items() if k not in ("kept", "removed", "hinge_band", "path", "hull_2d")}
            records.append({"instruction": i + 1, "type": spec.type, "primitive": spec.primitive, "attempts": attempt,
                            "rejected": reasons, "n_mask": int(res.mask.sum()), **info})
            s = Surface(res.points, res.normals, source=source)
    meta = dict(cloud.meta)
    if tags is not None:
        meta["tags"] = tags
    return PointCloud(s.points, s.normals, mask.astype(np.int64), meta), records
