"""The space a recipe search explores, and recipes as synth configs.

A trial draws (Optuna define-by-run):

- ``ratio``: synthetic defects per real guide defect (log scale within ``ratio_range``);
- ``w_<generator>``: a weight in [0, 1] per candidate generator; generators below
  ``MIN_WEIGHT`` are left out (the heaviest one always stays);
- per kept generator, the parameters in :data:`SPACES` (centres of ranges; the recipe holds
  the range around each centre). A generator without an entry is searched by weight only.

Every range is relative to what the generators fit on the real defects (sizes, looks and
positions come from them), so the space carries over to other parts unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

from defectforge.errors import ConfigError

MIN_WEIGHT = 0.1


def _around(spread: float = 0.15) -> Callable[[float], list[float]]:
    """A drawn centre ``c`` -> the range ``[c (1 - spread), c (1 + spread)]``."""
    return lambda c: [round(c * (1 - spread), 4), round(c * (1 + spread), 4)]


#: generator -> {param: (kind, choices or (lo, hi, log), how the value becomes the param)}
SPACES: dict[str, dict[str, tuple[str, Any, Callable[[Any], Any] | None]]] = {
    "fitted": {
        "scale": ("float", (0.6, 1.6, True), _around(0.2)),
        "strength": ("float", (0.5, 1.6, False), _around()),
        "edge": ("float", (0.5, 2.0, True), _around()),
        "detail": ("float", (0.2, 1.5, False), None),
        "prior_weight": ("float", (0.0, 1.0, False), None),
        "similarity": ("float", (0.0, 3.0, False), None),
    },
    "transplant": {
        "blend": ("cat", ("normal", "mixed", "matched"), None),
        "placement": ("cat", ("random", "context"), None),
        "scale": ("float", (0.6, 1.5, True), _around(0.2)),
    },
    "pitting": {
        "mask": ("cat", ("cluster", "real"), None),
        "darkness": ("float", (0.1, 0.6, False), _around(0.25)),
    },
}


def suggest(trial: Any, generators: list[str], ratio_range: tuple[float, float]) -> dict[str, Any]:
    """Draw one recipe's parameters from ``trial`` (an ``optuna.Trial``); returns
    ``{"ratio": r, "generators": [{"name", "weight", "params"}]}``."""
    ratio = trial.suggest_float("ratio", ratio_range[0], ratio_range[1], log=True)
    weights = {g: trial.suggest_float(f"w_{g}", 0.0, 1.0) for g in generators} if len(generators) > 1 else \
        {generators[0]: 1.0}
    top = max(weights, key=lambda g: weights[g])
    kept = [g for g in generators if weights[g] >= MIN_WEIGHT or g == top]
    gens = []
    for g in kept:
        params: dict[str, Any] = {}
        for p, (kind, dom, conv) in SPACES.get(g, {}).items():
            key = f"{g}.{p}"
            if kind == "cat":
                v = trial.suggest_categorical(key, list(dom))
            else:
                v = trial.suggest_float(key, dom[0], dom[1], log=dom[2])
            params[p] = conv(v) if conv is not None else (v if kind == "cat" else round(float(v), 4))
        gens.append({"name": g, "weight": round(max(weights[g], MIN_WEIGHT), 4), "params": params})
    return {"ratio": float(ratio), "generators": gens}


def check_generators(names: list[str]) -> list[str]:
    from defectforge.synth2d.base import list_generators

    if not names:
        raise ConfigError("--generators: give at least one generator")
    known = list_generators()
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"unknown generator(s) {bad} (registered: {', '.join(known)})")
    return names


def synth_config(recipe: dict[str, Any], source: str, n: int, seed: int, defect_type: str | None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The synth config (a dict :func:`~defectforge.synth2d.config.parse_config` accepts)
    that makes ``n`` samples of ``recipe`` from the train split of ``source``."""
    gens = []
    for g in recipe["generators"]:
        params = dict(g["params"])
        if defect_type is not None:
            params.setdefault("defect_type", defect_type)
        gens.append({"name": g["name"], "weight": g["weight"], "params": params})
    cfg: dict[str, Any] = {"source": {"path": str(source), "split": "train", "real_defects": True},
                           "generators": gens, "n": int(n), "seed": int(seed)}
    if recipe.get("hosts", "all") != "all":
        cfg["source"]["hosts"] = recipe["hosts"]
    if extra:
        cfg["recipe"] = extra
    return cfg
