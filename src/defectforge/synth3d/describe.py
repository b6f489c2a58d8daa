"""A rule-based parser from short defect descriptions to validated instructions.

"two 5 mm scratches on the top face and a dent near the hole" becomes two instructions
(2 scratches of length 5 mm on region ``top``; 1 dent on region ``hole``). Absolute
sizes (um, mm, cm, m) need the part size (``part_diag`` in mm) and are converted to
fractions of the diagonal; ``%`` means percent of the diagonal. A size sets the
operator's main dimension: scratch/groove/crack length, dent/bump/pit diameter,
bulge/sink/freeform extent, bend angle (in degrees: "a 15 deg bend"). Counts may be
digits or words ("twenty five dents" is 25). Words such as
"deep", "shallow", "large", "small", "long", "fine" scale the defaults. Anything the
parser cannot read raises :class:`~defectforge.errors.ConfigError` quoting the clause.
A leading product phrase without a defect word ("steel flange with ...") is kept only
as context in the instruction names.
"""

from __future__ import annotations

import json
import re

from defectforge.errors import ConfigError
from defectforge.synth3d.instructions import InstructionSet, validate_instructions
from defectforge.synth3d.operators import OPERATORS

_NUMBERS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "pair": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
            "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
            "dozen": 12, "several": 3, "few": 3, "some": 2, "multiple": 3, "many": 5}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_ONES = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def count_from_words(words: list[str]) -> int | None:
    """The count a list of words spells: "twenty five" / "twenty-five" -> 25, "a dozen" -> 12,
    "two" -> 2; the largest number named wins (None if no number word appears)."""
    found = []
    for i, w in enumerate(words):
        if w in _TENS:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            found.append(_TENS[w] + (_NUMBERS[nxt] if nxt in _ONES else 0))
        elif w in _NUMBERS and not (i > 0 and words[i - 1] in _TENS and w in _ONES):
            found.append(_NUMBERS[w])
    return max(found) if found else None


def has_absolute_sizes(text: str) -> bool:
    """True when ``text`` gives a length in absolute units (mm, cm, m, um, inch), which needs
    the part's real size."""
    return any(m.group(2).lower() not in ("%", "°") and not m.group(2).lower().startswith("deg")
               for m in _SIZE.finditer(text))
_TYPES = [
    (r"scratch(?:es|ed)?", "scratch"), (r"grooves?", "groove"), (r"cracks?|fractures?|split", "crack"),
    (r"bend(?:s|ing)?|bent|warp(?:ed|ing)?", "bend"), (r"pits?|pitting|pinholes?", "pit"),
    (r"dents?|dings?|indentations?|concavit(?:y|ies)", "dent"), (r"bumps?|protrusions?|burrs?|nubs?", "bump"),
    (r"bulges?|swell(?:ing)?s?", "bulge"), (r"sinks?|sink marks?|depressions?|sags?", "sink"),
    (r"deformations?|deformed|distortions?|freeform|free-form", "freeform"),
]
_REGIONS = [(r"top", "top"), (r"bottom|underside|base", "bottom"), (r"side|wall|rim|flank", "side"),
            (r"hole|bore|holes|pocket|recess", "hole"), (r"edge|corner|chamfer", "edge")]
UNITS_MM = {"um": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}
"""Length units of input coordinates (``--units``), in millimetres."""
_UNITS = {**UNITS_MM, "µm": 1e-3, "micron": 1e-3, "microns": 1e-3, "inch": 25.4, "inches": 25.4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(um|µm|microns?|mm|cm|m|inch(?:es)?|%|deg(?:rees?)?|°)(?![a-z])", re.I)
_MAIN = {"scratch": "length", "groove": "length", "crack": "length", "dent": "radius", "bump": "radius",
         "pit": "radius", "bulge": "size", "sink": "size", "freeform": "size", "bend": "angle"}
_SCALE_WORDS = {"deep": ("depth", 1.6), "shallow": ("depth", 0.5), "large": ("size", 1.6), "big": ("size", 1.6),
                "small": ("size", 0.6), "tiny": ("size", 0.4), "long": ("length", 1.6), "short": ("length", 0.6),
                "fine": ("width", 0.6), "wide": ("width", 1.6), "strong": ("depth", 1.6), "slight": ("depth", 0.5)}


def _split_clauses(text: str) -> list[str]:
    parts = re.split(r"\s*(?:,|;|\band\b|\bplus\b|\bwith\b|\balso\b)\s*", text.strip().rstrip("."), flags=re.I)
    return [p for p in (x.strip() for x in parts) if p]


def parse_description(text: str, part_diag: float | None = None, *, seed: int | None = None,
                      size_hint: str = "") -> InstructionSet:
    """Instructions for a short English description (see module docstring).

    ``part_diag`` is the part's bounding-box diagonal in mm. An absolute size that comes
    out impossible for the part raises :class:`ConfigError` naming the size, the part
    diagonal in mm and ``size_hint`` (the caller's advice, e.g. which option sets units).
    """
    if not text or not text.strip():
        raise ConfigError("description is empty")
    defects: list[dict] = []
    clauses = _split_clauses(text)
    product = None
    if clauses and not any(re.search(rf"\b(?:{pat})\b", clauses[0].lower()) for pat, _ in _TYPES) and len(clauses) > 1:
        product, clauses = clauses[0], clauses[1:]  # "steel flange with two scratches ..."
    for clause in clauses:
        low = clause.lower()
        dtype = next((t for pat, t in _TYPES if re.search(rf"\b(?:{pat})\b", low)), None)
        region = next((r for pat, r in _REGIONS if re.search(rf"\b(?:{pat})\b", low)), None)
        if dtype is None:
            if region is not None and defects:  # "a dent and a scratch, both on the top"
                defects[-1]["location"] = {"kind": "region", "name": region}
                continue
            raise ConfigError(f"description: cannot find a defect type in {clause!r} "
                              f"(known: {', '.join(sorted(set(t for _, t in _TYPES)))})")
        count = 1
        m = re.search(r"\b(\d+)\s*[x×]?\s+(?!mm|cm|um|m\b|inch|%|deg)", low)
        words = re.findall(r"[a-z]+", low)
        if m and not _SIZE.match(low[m.start():]):
            count = int(m.group(1))
        else:
            count = count_from_words(words) or 1
        params: dict[str, object] = {}
        base = dict(OPERATORS[dtype].defaults)
        for w in words:
            if w in _SCALE_WORDS:
                key, f = _SCALE_WORDS[w]
                key = {"size": _MAIN[dtype] if dtype != "bend" else "angle"}.get(key, key)
                if key in base:
                    lo, hi = base[key]
                    params[key] = (lo * f, hi * f)
        sm = _SIZE.search(clause)
        if sm:
            value, unit = float(sm.group(1)), sm.group(2).lower()
            main = _MAIN[dtype]
            if unit.startswith("deg") or unit == "°":
                if dtype != "bend":
                    raise ConfigError(f"description: an angle only makes sense for a bend, not in {clause!r}")
                params["angle"] = value
            else:
                if dtype == "bend":
                    raise ConfigError(f"description: give a bend an angle in degrees, not a length, in {clause!r}")
                if unit == "%":
                    ratio = value / 100.0
                else:
                    if part_diag is None or part_diag <= 0:
                        raise ConfigError(f"description: {clause!r} gives an absolute size ({sm.group(0)}) but the part "
                                          "size is unknown; pass the part diagonal in mm"
                                          + (f" ({size_hint})" if size_hint else ""))
                    ratio = value * _UNITS[unit] / part_diag
                if main == "radius":
                    ratio /= 2.0  # a "5 mm dent" is 5 mm across
                lo, hi = OPERATORS[dtype].bounds[main]
                if unit != "%" and not lo <= ratio <= hi:
                    raise ConfigError(
                        f"description: impossible size {main}={ratio:.4g} (x diag) for {sm.group(0)} in {clause!r}: "
                        f"the part diagonal is {part_diag:.4g} mm and a {dtype} {main} must be {lo:g}-{hi:g} x diag"
                        + (f"; {size_hint}" if size_hint else ""))
                params[main] = ratio
        spec: dict = {"type": dtype, "count": count, "params": params, "name": f"{dtype}: {clause}"}
        if region is not None:
            spec["location"] = {"kind": "region", "name": region}
        if seed is not None:
            spec["seed"] = seed + len(defects)
        defects.append(spec)
    if not defects:
        raise ConfigError(f"description: no defect found in {text!r}")
    for d in defects:
        if product:
            d["name"] = f"{d['name']} (on {product})"
    return validate_instructions({"version": 1, "defects": defects}, source="description")


class SizedDescription:
    """``diag -> parse_description(text, part_diag=diag * scale, size_hint=hint)``: the
    instructions for each sample's own part, whose coordinates are in units of ``scale`` mm
    (picklable, so engine workers can run it)."""

    def __init__(self, text: str, scale: float, hint: str = ""):
        self.text, self.scale, self.hint = text, float(scale), hint

    def __call__(self, diag: float) -> InstructionSet:
        return parse_description(self.text, part_diag=diag * self.scale, size_hint=self.hint)


def instructions_from_llm(text: str, client, part_diag: float | None = None, part_name: str | None = None) -> InstructionSet:
    """Ask an OpenAI-compatible model (a :class:`defectforge.llm.ChatClient`) for
    instructions; the reply must pass the same schema and bounds checks as a file.
    Raises :class:`defectforge.llm.LLMError` (client problems) or ConfigError (invalid)."""
    from defectforge.synth3d.instructions import instruction_json_schema

    bounds = {name: {k: list(v) for k, v in op.bounds.items()} for name, op in OPERATORS.items()}
    system = (
        "You turn short descriptions of manufacturing defects on a 3D part into JSON instructions. "
        "Answer with one JSON object only, matching this JSON Schema:\n"
        f"{json.dumps(instruction_json_schema())}\n"
        "All lengths are fractions of the part's bounding-box diagonal"
        + (f" ({part_diag:g} mm)" if part_diag else "")
        + f". Parameter bounds per type: {json.dumps(bounds)}. Angles are degrees."
    )
    user = f"Part: {part_name or 'unknown'}. Defects: {text}"
    from defectforge.llm import LLMMalformed

    inst = client.complete_json([{"role": "system", "content": system}, {"role": "user", "content": user}], InstructionSet)
    try:
        return validate_instructions(inst, source="LLM instructions")
    except ConfigError as exc:
        raise LLMMalformed(f"LLM instructions failed validation: {exc}") from None
