"""Generator contract and registry.

Every 2D generator is a class with a pydantic config model and a method
``generate(image, rng, roi=None) -> SynthResult``. The result image differs from the
input **only inside** ``result.mask`` (the base class enforces this by compositing the
untouched source back outside the mask), so the mask is an exact label of where pixels
may have changed; :func:`defectforge.synth2d.labels.derive_label` then keeps only the
part that visibly changed.

Generators are looked up by name (``get_generator("pitting", size=...)``); third
parties add theirs with ``@register_generator("name")``. Seeding is only through the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from defectforge.errors import ConfigError, InputError
from defectforge.registry import Registry


@dataclass
class SynthResult:
    """A generated image (H x W x 3 uint8), its exact defect mask (bool H x W) and the
    parameters that were sampled (JSON-serialisable)."""

    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RealDefect:
    """A real defect cut from a labelled image: the crop around one mask (with context),
    its mask and where it came from. Used by real-mask makers and real-defect transplant."""

    image: np.ndarray  # h x w x 3 uint8 crop
    mask: np.ndarray  # h x w bool
    source: str = ""
    center_yx: tuple[float, float] = (0.0, 0.0)  # centroid in the source image, relative (0..1)
    image_shape: tuple[int, int] = (0, 0)
    context: np.ndarray | None = None  # host-surface descriptor around it (synth2d.fit.host_descriptors)
    surround: Any = None  # its surround window (synth2d.placement.Surround), for context-matched placement


class GeneratorConfig(BaseModel):
    """Common options for every generator (subclasses add their own fields).

    Every number must be finite (NaN/inf refused for every float parameter of every
    generator); a ``[low, high]`` range needs ``low <= high``; and a field named in
    :attr:`limits` (sizes and counts) must lie within its bounds, so an absurd value (a
    million pits per cluster) is one line instead of minutes of rendering."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    limits: ClassVar[dict[str, tuple[float, float]]] = {}
    """``{field: (min, max)}``: bounds for every number of that field (a value or a range)."""

    path_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that name a file or folder (a front end such as the studio resolves them inside its
    project, as it does every other path a client gives)."""

    defect_type: str = "defect"
    """Label written for samples of this generator (e.g. ``"pitting"``)."""

    @field_validator("*")
    @classmethod
    def _check_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Per field, so that an error names its field (``loc``) for every caller."""
        nums = value if isinstance(value, tuple) else (value,)
        if not nums or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in nums):
            return value
        if isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
            raise ValueError(f"a range [low, high] needs low <= high, got {list(value)}")
        lo, hi = cls.limits.get(info.field_name, (-math.inf, math.inf))
        if not all(lo <= x <= hi for x in nums):
            shown = list(value) if isinstance(value, tuple) else value
            raise ValueError(f"must be between {lo:g} and {hi:g}, got {shown}")
        return value


class Generator:
    """Base class. Subclasses set ``name``, ``Config`` and implement :meth:`_render`."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    needs_real: ClassVar[bool] = False

    def __init__(self, config: GeneratorConfig | None = None, **params: Any):
        if config is None:
            try:
                config = self.Config(**params)
            except ValidationError as exc:
                raise ConfigError(f"generator {self.name!r}: {_pydantic_msg(exc)}") from None
        elif params:
            raise ConfigError(f"generator {self.name!r}: give either a config object or keyword parameters")
        self.config = config
        self.real: list[RealDefect] = []
        self.stats = None  # MaskStats fitted from real masks, when any

    # -- real defects ------------------------------------------------------------------
    def fit(self, real: Sequence[RealDefect]) -> "Generator":
        """Attach real defects (crops + masks): they drive mask statistics and, for
        generators that use them, real shapes and transplant sources."""
        from defectforge.synth2d.masks import MaskStats

        self.real = list(real)
        self.stats = MaskStats.fit([r.mask for r in self.real], [r for r in self.real]) if self.real else None
        return self

    @property
    def defect_type(self) -> str:
        return self.config.defect_type

    # -- generation --------------------------------------------------------------------
    def generate(self, image: np.ndarray, rng: np.random.Generator, roi: np.ndarray | None = None) -> SynthResult:
        """Return a defective version of ``image`` with its exact mask and sampled params."""
        img = _check_image(image)
        if roi is not None:
            roi = np.asarray(roi, dtype=bool)
            if roi.shape != img.shape[:2]:
                raise InputError(None, f"region of interest is {roi.shape[1]}x{roi.shape[0]} but the image is "
                                       f"{img.shape[1]}x{img.shape[0]}")
            if not roi.any():
                raise InputError(None, "region of interest is empty: no place to put a defect")
        if self.needs_real and not self.real:
            raise ConfigError(f"generator {self.name!r} needs real defects with masks (none were given)")
        out, mask, meta = self._render(img, rng, roi)
        mask = np.asarray(mask, dtype=bool)
        if roi is not None:
            mask &= roi
        out = np.where(mask[..., None], np.clip(out, 0, 255).astype(np.uint8), img)
        meta = {"generator": self.name, **_jsonable(meta)}
        return SynthResult(np.ascontiguousarray(out), mask, meta)

    def _render(self, image: np.ndarray, rng: np.random.Generator,
                roi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


# -- registry ----------------------------------------------------------------------------
#: The 2D generators: the weight-free built-ins, the diffusion backend (its module imports
#: no diffusers at import time; a broken optional backend only warns) and third-party
#: plug-ins declared as entry points in the group ``defectforge.generators2d``
#: (``name = "package.module:Class"``).
GENERATORS: Registry[type[Generator]] = Registry(
    "generator", builtin=("defectforge.synth2d.procedural", "defectforge.synth2d.transplant",
                                    "defectforge.synth2d.fitted"),
    optional=("defectforge.synth2d.diffusion",), entry_points="defectforge.generators2d", base=Generator)


def register_generator(name: str) -> Callable[[type[Generator]], type[Generator]]:
    """Class decorator: make a :class:`Generator` subclass available as ``name``."""
    return GENERATORS.register(name)


def list_generators() -> list[str]:
    """Names of all registered generators, sorted."""
    return GENERATORS.names()


def generator_class(name: str) -> type[Generator]:
    return GENERATORS.get(name)


def get_generator(name: str, **config: Any) -> Generator:
    """An instance of generator ``name`` configured by keyword parameters."""
    return generator_class(name)(**config)


def config_schema(name: str) -> dict[str, Any]:
    """JSON schema of a generator's config (for docs and UIs)."""
    return generator_class(name).Config.model_json_schema()


# -- helpers -------------------------------------------------------------------------------
def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(None, f"generators expect an H x W x 3 uint8 image, got shape {img.shape} {img.dtype}")
    return img


def _pydantic_msg(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()))
        msg = str(e.get("msg")).removeprefix("Value error, ")  # our own validators' text, as written
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return round(obj, 5)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj
