"""Author 3D: load a cloud, mesh or parametric part; place an MPAS operator by clicking a
surface point; preview the defective cloud with its point-wise mask; turn a description
into validated instructions (rule parser, or the LLM client when the server was started
with ``--llm-url``); save instructions as a file ``synth3d -i`` accepts.

Every preview runs :func:`defectforge.synth3d.instructions.synthesize` on an
:class:`InstructionSet`, the same path as ``defectforge synth3d``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from defectforge.errors import ConfigError, InputError
from defectforge.studio import forms
from defectforge.studio.data_api import _sample, studio
from defectforge.studio.state import cloud_payload

router = APIRouter(prefix="/api")
MAX_POINTS = 300_000


@router.get("/operators")
def operators(request: Request) -> dict[str, Any]:
    from defectforge.synth3d.parts import PART_NAMES

    llm = studio(request).llm
    return {"operators": forms.operator_forms(), "parts": list(PART_NAMES),
            "llm": None if llm is None else getattr(llm, "model", "configured")}


class Load3D(BaseModel):
    kind: str = "part"  # part | file | dataset
    name: str = "flange"
    n_points: int = Field(20000, ge=100, le=MAX_POINTS)
    seed: int = Field(0, ge=0)
    path: str | None = None
    i: int | None = None


@router.post("/author3d/load")
def load(request: Request, req: Load3D) -> dict[str, Any]:
    st = studio(request)
    if req.kind == "part":
        from defectforge.synth3d.parts import make_part

        pc = make_part(req.name, req.n_points, req.seed)
        name = req.name
    elif req.kind == "file":
        from defectforge.synth3d.cloud_io import read_cloud

        pc = read_cloud(st.paths.resolve(req.path or "", must_exist=True), mesh_points=req.n_points, seed=req.seed)
        name = req.path
    elif req.kind == "dataset":
        kind, s = _sample(st, req.path or "", int(req.i or 0))
        if kind != "3d":
            raise InputError(req.path, "not a 3D dataset")
        pc = s.load()
        name = f"{req.path}#{s.name}"
    else:
        raise forms.FieldError("kind", f"unknown source kind {req.kind!r} (part, file or dataset)")
    if len(pc) > MAX_POINTS:
        pc = pc.subset(np.sort(np.random.default_rng(req.seed).choice(len(pc), MAX_POINTS, replace=False)))
    from defectforge.synth3d.cloud import PointCloud

    pc = PointCloud(pc.points, pc.normals, None, pc.meta)  # authoring starts from a clean cloud
    cid = st.new_id()
    st.clouds.put(cid, pc)
    return {"id": cid, "name": name, **cloud_payload(pc.points, None, MAX_POINTS)}


def _cloud(st, cid: str):
    pc = st.clouds.get(cid)
    if pc is None:
        raise forms.FieldError("cloud", f"cloud {cid} is no longer loaded; load it again")
    return pc


class Place3D(BaseModel):
    cloud: str
    operator: str
    params: dict[str, Any] = Field(default_factory=dict)
    point: int | None = None  # row of the clicked point
    radius: float = Field(0.01, gt=0, le=1.0)
    seed: int = Field(0, ge=0)


@router.post("/author3d/instructions")
def place(request: Request, req: Place3D) -> dict[str, Any]:
    """The instruction set for one operator placed at the clicked point (validated)."""
    pc = _cloud(studio(request), req.cloud)
    spec: dict[str, Any] = {"type": req.operator, "params": _clean(req.params), "seed": req.seed}
    if req.point is not None:
        if not 0 <= req.point < len(pc):
            raise forms.FieldError("point", f"point {req.point} is not in the cloud (0..{len(pc) - 1})")
        spec["location"] = {"kind": "point", "xyz": [round(float(v), 6) for v in pc.points[req.point]],
                            "radius": req.radius}
    return {"instructions": _validate({"version": 1, "defects": [spec]})}


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if v is None or v == "" or v == []:
            continue
        out[k] = tuple(v) if isinstance(v, list) else v
    return out


def _validate(data: Any) -> dict[str, Any]:
    from defectforge.synth3d.instructions import validate_instructions

    try:
        inst = validate_instructions(data, source="instructions")
    except ConfigError as exc:
        raise forms.FieldError(_field_of(str(exc)), str(exc)) from None
    return inst.model_dump(mode="json", exclude_none=True)


def _field_of(msg: str) -> str | None:
    """The form field a validation message is about (a parameter name), if any."""
    m = re.search(r"(?:parameter '|size |: )([a-z_]+)(?:'|=| range)", msg)
    return m.group(1) if m else None


class Run3D(BaseModel):
    cloud: str
    instructions: dict[str, Any]
    seed: int = Field(0, ge=0)


@router.post("/author3d/preview")
def preview(request: Request, req: Run3D) -> dict[str, Any]:
    """Apply the instructions to the loaded cloud; the defective cloud with its mask."""
    from defectforge.synth3d.instructions import synthesize, validate_instructions

    st = studio(request)
    pc = _cloud(st, req.cloud)
    data = _validate(req.instructions)
    out, records = synthesize(pc, validate_instructions(data), np.random.default_rng(req.seed),
                              source=str(pc.meta.get("source", "cloud")))
    payload = cloud_payload(out.points, out.labels, MAX_POINTS)
    from defectforge.synth2d.base import _jsonable  # the toolkit's one JSON-safe conversion of params

    return {**payload, "instructions": data, "records": _jsonable(records)}


class Describe(BaseModel):
    text: str = Field(max_length=2000)
    part_diag_mm: float | None = Field(None, gt=0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0)
    use_llm: bool = True


@router.post("/author3d/describe")
def describe(request: Request, req: Describe) -> dict[str, Any]:
    """Validated instructions for a description; errors carry ``field: "text"``."""
    from defectforge.synth3d.describe import instructions_from_llm, parse_description

    st = studio(request)
    used = "rules"
    try:
        inst = None
        if req.use_llm and st.llm is not None:
            from defectforge.llm import LLMError

            try:
                inst = instructions_from_llm(req.text, st.llm, part_diag=req.part_diag_mm)
                used = "llm"
            except LLMError as exc:
                used = f"rules (LLM unavailable: {exc})"
        if inst is None:
            inst = parse_description(req.text, req.part_diag_mm, seed=req.seed)
    except ConfigError as exc:
        raise forms.FieldError("text", str(exc)) from None
    return {"instructions": inst.model_dump(mode="json", exclude_none=True), "parser": used}


class Save3D(BaseModel):
    path: str
    instructions: dict[str, Any]


@router.post("/author3d/save")
def save(request: Request, req: Save3D) -> dict[str, Any]:
    """Write validated instructions as YAML (``.yaml``/``.yml``) or JSON inside the project."""
    import json

    import yaml

    from defectforge._atomic import atomic_write_text

    st = studio(request)
    data = _validate(req.instructions)
    dst = st.paths.resolve(req.path, write=True)
    if dst.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise forms.FieldError("path", "instruction files end in .yaml, .yml or .json")
    dst.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2) + "\n" if dst.suffix.lower() == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(dst, text)
    return {"path": st.paths.relative(dst)}
