"""A small defect taxonomy: per defect type, the materials it occurs on and the words that
describe how it looks. Prompt templates (:mod:`defectforge.prompts.templates`) and the VLM
prompt builder draw on it, so prompts stay specific ("small dark corrosion pits") instead of
generic ("a defect").

Users extend it with :func:`register_defect` (e.g. from a YAML file in their project).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from defectforge.errors import ConfigError


class DefectType(BaseModel):
    """One defect type: its name, typical materials, appearance words and what to avoid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    materials: tuple[str, ...] = Field(min_length=1)
    appearance: tuple[str, ...] = Field(min_length=1)
    negative: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


_BUILTIN = [
    DefectType(name="pitting", description="small cavities from corrosion or surface fatigue, often in clusters",
               materials=("ground steel", "ball screw spindle", "bearing race", "machined metal"),
               appearance=("small dark corrosion pits", "clustered pitting cavities with rough bottoms",
                           "tiny irregular pits with bright rims", "pitted spots with a rough dark texture"),
               negative=("large holes", "rust colour", "smooth"), aliases=("pit", "pits", "corrosion pits")),
    DefectType(name="scratch", description="thin linear abrasion of the surface",
               materials=("brushed metal", "painted sheet metal", "plastic housing", "glass screen"),
               appearance=("a thin bright scratch line", "fine straight scratches", "a curved abrasion mark",
                           "copper metal scratches"),
               negative=("wide stripes", "cracks", "text"), aliases=("scratches", "abrasion")),
    DefectType(name="crack", description="a narrow branching fracture line",
               materials=("cast metal", "ceramic", "concrete", "plastic"),
               appearance=("a dark hairline crack", "a branching thin crack", "a jagged fracture line"),
               negative=("straight lines", "scratches"), aliases=("cracks", "fracture")),
    DefectType(name="stain", description="a discoloured patch without relief",
               materials=("painted surface", "steel sheet", "fabric", "plastic"),
               appearance=("white marks", "a faint discoloured stain", "dried residue spots",
                           "a cloudy water stain"),
               negative=("holes", "relief", "text"), aliases=("stains", "white marks", "discoloration")),
    DefectType(name="dent", description="a shallow depression visible only through shading",
               materials=("sheet metal", "aluminium panel", "car body panel"),
               appearance=("a shallow dent with soft shading", "a small round impression", "a pressed-in bump"),
               negative=("colour change", "holes"), aliases=("dents", "impression")),
    DefectType(name="corrosion", description="rust or oxide growth on metal",
               materials=("steel", "cast iron", "galvanised steel"),
               appearance=("orange-brown rust spots", "flaking corrosion patch", "reddish oxide stain"),
               negative=("paint", "clean metal"), aliases=("rust", "oxidation")),
    DefectType(name="contamination", description="foreign particles or fibres on the surface",
               materials=("plastic part", "glass", "wafer", "metal sheet"),
               appearance=("small dust particles", "a dark fibre", "a speck of debris"),
               negative=("scratches", "holes"), aliases=("dirt", "particle", "debris")),
    DefectType(name="chip", description="a missing piece at an edge or coating",
               materials=("ceramic tile", "painted edge", "glass edge", "coated metal"),
               appearance=("a chipped edge", "flaked-off coating exposing the base material",
                           "a small broken-off piece"),
               negative=("cracks", "stains"), aliases=("chipping", "spall")),
]

_TAXONOMY: dict[str, DefectType] = {d.name: d for d in _BUILTIN}


def register_defect(defect: DefectType, replace: bool = False) -> DefectType:
    """Add a defect type (or replace one with ``replace=True``)."""
    if defect.name in _TAXONOMY and not replace:
        raise ConfigError(f"defect type {defect.name!r} already exists; pass replace=True to override it")
    _TAXONOMY[defect.name] = defect
    return defect


def defect_types() -> list[str]:
    """Names of all known defect types, sorted."""
    return sorted(_TAXONOMY)


def lookup(name: str) -> DefectType | None:
    """The defect type called ``name`` or with it as an alias (case-insensitive); None if unknown."""
    key = _norm(name)
    for d in _TAXONOMY.values():
        if key == _norm(d.name) or key in {_norm(a) for a in d.aliases}:
            return d
    return None


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().replace("_", " ").replace("-", " ").split())
