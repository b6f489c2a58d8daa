"""MPAS-style defect operators on point clouds with exact point-wise masks.

Every operator has the contract::

    op(points, normals, rng, *, surface=None, center=None, **params) -> OpResult
    OpResult(points, normals, mask, info)      # unpacks as a 4-tuple

``mask`` is a bool array aligned with the *output* points; it marks exactly the points
the operator displaced by at least ``label_threshold`` x diag (displacement operators;
default :data:`LABEL_THRESHOLD`, recorded in ``info``; points moved by less stay
unlabelled and ``info["max_unlabelled_displacement"]`` bounds their motion) or the walls
left by removed points (crack). ``info["achieved"]`` records what the labelled points
really reach (displacement, radius, line length) next to the requested ``params``. It is carried as an index mask, never recovered by coordinate matching. All
lengths are fractions of the bounding-box diagonal ``diag``; randomness only comes from
``rng``. ``info`` records the primitive, the centre, the support size, the largest
displacement and every value actually used. Deleting operators also return
``info["kept"]``, the input index of each output point.

Primitives (section 2 of docs/synthesis-3d.md, reimplemented):

- 1D point: ``bump``, ``dent``, ``pit`` — raised-cosine (pit: squared paraboloid)
  displacement along the outward normal of a ball around a surface point.
- 1D line: ``scratch``, ``groove`` — a geodesic path (Dijkstra on a kNN graph built only
  inside a ball around the two endpoints) widened into a tube, with a profile across
  (raised cosine, V or U) and a taper along the path.
- 2D plane: ``bend`` — a smooth Barr bend about a hinge line (PCA long axis or a given
  plane), continuous across the hinge zone; ``crack`` — removal of a lens-shaped slab
  through a surface point, the crack walls are the mask.
- 3D free-form: ``freeform`` / ``bulge`` / ``sink`` — support = region points inside the
  2D convex hull of sampled surface points; Gaussian, smooth-noise or surface-fit
  height field; raised-cosine falloff from the hull boundary; IDW local smoothing.

Compound defects: :func:`compose` applies steps in sequence and ORs the masks (masks
of earlier steps are re-indexed through ``kept`` when points are removed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from defectforge.registry import Registry
from defectforge.synth3d.local_defects import bump, dent, groove, pit, scratch
from defectforge.synth3d.shape_defects import bend, bulge, crack, freeform, sink
from defectforge.synth3d.surface import (  # noqa: F401 (re-exported: public names of this module)
    LABEL_THRESHOLD,
    MIN_LENGTH_RATIO,
    OpResult,
    Surface,
    SynthesisError,
    _surface,
    refresh_normals,
)


@dataclass(frozen=True)
class OperatorSpec:
    """An operator, its primitive family, and per-parameter (lo, hi) bounds plus the
    default sampling range (all lengths as fractions of diag, angles in degrees).

    ``int_params`` are sampled as integers; ``random_centre=False`` means a random
    location lets the operator place itself (``bend`` puts its hinge along the long
    axis) instead of drawing a surface point as the centre. The instruction schema
    (:mod:`defectforge.synth3d.instructions`) reads all of this from :data:`OPERATORS`.
    """

    fn: Callable[..., OpResult]
    primitive: str
    bounds: dict[str, tuple[float, float]]
    defaults: dict[str, tuple[float, float]]
    mask_fraction: tuple[float, float] = (0.0002, 0.25)
    int_params: tuple[str, ...] = ()
    random_centre: bool = True


_LT = {"label_threshold": (0.0, 0.05)}
_POINT_B = {"radius": (0.003, 0.25), "depth": (0.0005, 0.1), "normal_gate": (-1.0, 0.99), **_LT}
_LINE_B = {"length": (0.01, 0.8), "width": (0.001, 0.1), "depth": (0.0002, 0.05), "taper": (0.0, 0.5),
           "sign": (-1.0, 1.0), "normal_gate": (-1.0, 0.99), **_LT}
_FREE_B = {"size": (0.01, 0.4), "aspect": (0.2, 1.0), "amplitude": (0.0005, 0.1), "n_hull": (4, 40),
           "normal_gate": (-1.0, 0.99), **_LT}

#: The 3D defect operators (plug-ins: ``OPERATORS.register(name, OperatorSpec(...))`` or the
#: entry-point group ``defectforge.operators3d``).
OPERATORS: Registry[OperatorSpec] = Registry("operator", entry_points="defectforge.operators3d")
_BUILTIN_OPERATORS = {
    "bump": OperatorSpec(bump, "1D", _POINT_B, {"radius": (0.03, 0.06), "depth": (0.006, 0.015)}),
    "dent": OperatorSpec(dent, "1D", _POINT_B, {"radius": (0.03, 0.06), "depth": (0.006, 0.015)}),
    "pit": OperatorSpec(pit, "1D", _POINT_B, {"radius": (0.01, 0.02), "depth": (0.005, 0.012)}),
    "scratch": OperatorSpec(scratch, "1D", _LINE_B, {"length": (0.1, 0.25), "width": (0.004, 0.008),
                                                     "depth": (0.002, 0.004)}),
    "groove": OperatorSpec(groove, "1D", _LINE_B, {"length": (0.1, 0.25), "width": (0.01, 0.016),
                                                   "depth": (0.004, 0.008)}),
    "bend": OperatorSpec(bend, "2D", {"angle": (-60.0, 60.0), "position": (0.05, 0.95), "zone": (0.005, 0.3), **_LT},
                         {"angle": (8.0, 20.0), "zone": (0.03, 0.06)}, mask_fraction=(0.01, 0.6),
                         random_centre=False),
    "crack": OperatorSpec(crack, "2D", {"length": (0.02, 0.8), "gap": (0.001, 0.05), "depth": (0.005, 0.3),
                                        "wall_k": (1, 20)},
                          {"length": (0.12, 0.25), "gap": (0.006, 0.012), "depth": (0.03, 0.08)},
                          int_params=("wall_k",)),
    "freeform": OperatorSpec(freeform, "3D", {**_FREE_B, "sign": (-1.0, 1.0)},
                             {"size": (0.06, 0.12), "amplitude": (0.008, 0.02)}, int_params=("n_hull",)),
    "bulge": OperatorSpec(bulge, "3D", _FREE_B, {"size": (0.06, 0.12), "amplitude": (0.008, 0.02)},
                          int_params=("n_hull",)),
    "sink": OperatorSpec(sink, "3D", _FREE_B, {"size": (0.06, 0.12), "amplitude": (0.008, 0.02)},
                         int_params=("n_hull",)),
}
for _name, _spec in _BUILTIN_OPERATORS.items():
    OPERATORS.register(_name, _spec)
CHOICE_PARAMS = {"profile": ("rc", "v", "u"), "field": ("gaussian", "noise", "surface_fit"), "smooth": (True, False)}


def apply(name: str, points, normals, rng, **params) -> OpResult:
    """Run the operator ``name`` (see :data:`OPERATORS`)."""
    return OPERATORS.get(name).fn(points, normals, rng, **params)


def compose(points, normals, rng, steps: list[tuple[str, dict]], *, surface: Surface | None = None) -> OpResult:
    """Apply ``steps`` ((operator, params) pairs) in order; masks are OR-ed.

    Earlier masks follow removals through each step's ``kept`` map, so the final mask
    always aligns with the final points. ``info["steps"]`` lists each step's info;
    ``info["kept"]`` maps final rows to input rows.
    """
    s = _surface(points, normals, surface)
    pts, nrm = s.points, s.normals
    mask = np.zeros(len(pts), dtype=bool)
    kept = np.arange(len(pts))
    infos = []
    for name, params in steps:
        res = apply(name, pts, nrm, rng, surface=s, **params)
        if "kept" in res.info:
            mask, kept = mask[res.info["kept"]], kept[res.info["kept"]]
        mask = mask | res.mask
        pts, nrm = res.points, res.normals
        infos.append(res.info)
        if len(infos) < len(steps):
            s = Surface(pts, nrm, source=s.source)
    return OpResult(pts, nrm, mask, {"operator": "compose", "steps": infos, "kept": kept})
