"""Form descriptions for the browser, built from the registries (never written per generator).

One field is ``{name, kind, default, min, max, choices, help}`` with ``kind`` one of
``number | integer | boolean | choice | range | text | json``. 2D generator forms come from
each generator's pydantic config (JSON schema: defaults, bounds, ``description`` as help);
3D operator forms from the operator registry :data:`defectforge.synth3d.operators.OPERATORS`
(bounds, default ranges, integer parameters, choice parameters). This module is the one place the studio reads the
registries, so switching to another registry API changes only this file.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from defectforge.errors import ConfigError


def _field(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name, "default": prop.get("default"), "help": prop.get("description", ""),
                         "title": prop.get("title", name)}
    typ = prop.get("type")
    if "enum" in prop:
        f.update(kind="choice", choices=list(prop["enum"]))
    elif typ == "boolean":
        f["kind"] = "boolean"
    elif typ in ("number", "integer"):
        f["kind"] = typ
        f["min"] = prop.get("minimum", prop.get("exclusiveMinimum"))
        f["max"] = prop.get("maximum", prop.get("exclusiveMaximum"))
    elif typ == "array" and prop.get("minItems") == 2 and prop.get("maxItems") == 2 and all(
            p.get("type") in ("number", "integer") for p in prop.get("prefixItems", [])):
        f["kind"] = "range"
    elif typ == "string":
        f["kind"] = "text"
    else:
        f["kind"] = "json"
    return f


def generator_names() -> list[str]:
    from defectforge.synth2d.base import GENERATORS

    return GENERATORS.names()


def generator_form(name: str) -> dict[str, Any]:
    """The form of 2D generator ``name``: its fields in config order, and whether it needs real defects."""
    from defectforge.synth2d.base import GENERATORS

    cls = GENERATORS.get(name)
    schema = cls.Config.model_json_schema()
    fields = [_field(k, v) for k, v in schema.get("properties", {}).items()]
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return {"name": name, "help": " ".join(doc.split()), "needs_real": bool(cls.needs_real), "fields": fields}


def make_generator(name: str, params: dict[str, Any]):
    """An instance of generator ``name``; a bad parameter raises :class:`FieldError` naming it."""
    from defectforge.synth2d.base import GENERATORS

    cls = GENERATORS.get(name)
    try:  # the config model checks types, finiteness, ranges (low <= high) and bounds, per field
        return cls(config=cls.Config(**params))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else None
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise FieldError(field, f"generator {name!r}: {field or 'params'}: {msg}") from None


def project_params(paths: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of generator ``name`` with its file/folder parameters (``Config.path_fields``,
    e.g. texture's ``folder``) resolved inside the project like every client path: ``..``,
    absolute paths and links out of it are refused (403), a missing one is a field error."""
    from defectforge.synth2d.base import GENERATORS

    if name not in GENERATORS:
        return params
    out = dict(params)
    for key in getattr(GENERATORS.get(name).Config, "path_fields", ()):
        value = out.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise FieldError(key, f"generator {name!r}: {key} must be a path inside the project, got {value!r}")
        full = paths.resolve(value)
        if not full.exists():
            raise FieldError(key, f"generator {name!r}: {key} {value!r} not found in the project folder")
        out[key] = str(full)
    return out


class FieldError(ConfigError):
    """A configuration error that belongs to one form field (shown next to it)."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        super().__init__(message)


def operator_forms() -> list[dict[str, Any]]:
    """One form per 3D operator: each bounded parameter as a range (default sampling range),
    plus the choice parameters every operator accepts."""
    from defectforge.synth3d.operators import CHOICE_PARAMS, OPERATORS

    out = []
    for name, op in OPERATORS.items():
        ints = set(getattr(op, "int_params", ()))
        fields = []
        for key, (lo, hi) in op.bounds.items():
            default = op.defaults.get(key)
            fields.append({"name": key, "title": key,
                           "kind": "range" if default is not None else ("integer" if key in ints else "number"),
                           "default": list(default) if default is not None else None, "min": lo, "max": hi,
                           "help": f"bounds [{lo:g}, {hi:g}]" + (" (degrees)" if key == "angle" else
                                                                  " (fraction of the part diagonal)"
                                                                  if key in ("radius", "depth", "length", "width",
                                                                             "size", "amplitude", "gap", "zone")
                                                                  else "")})
        out.append({"name": name, "primitive": op.primitive, "fields": fields,
                    "choices": {k: list(v) for k, v in CHOICE_PARAMS.items()}})
    return out
