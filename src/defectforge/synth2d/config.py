"""Configuration of a synthesis run (YAML file or quick CLI flags), validated by pydantic.

```yaml
source:
  path: ../shared/datasets/bsdata   # any dataset load_dataset reads
  split: train                      # good images AND real defects come from this split only
  good: null                        # null = all good images; N = the first N; [names] = these
  real_defects: true                # use labelled defects of the split (masks, stats, transplant)
  roi: auto                         # auto | border | none | path/to/roi_mask.png
  roi_margin: 8
  hosts: all                        # all | similar: only the good images most like the real defect images
  hosts_top: 0.25                   # with similar: the fraction of good images kept
generators:
  - {name: pitting, weight: 2}
  - {name: transplant, weight: 1, params: {blend: normal}}
counts: {pitting: 100}              # per defect type (or n: 100 over all generators)
seed: 0
formats: [mvtec, yolo, coco]
out: synth_out                      # optional; the CLI's --out wins
recipe: {detector: exdd, ...}       # optional provenance of a searched recipe (recorded, not used)
```

A *recipe* is such a config: a mix of generators (``weight``), their parameter ranges
(``params``; ranges are ``[lo, hi]`` pairs) and a count. ``defectforge recipe search``
writes one (``best_recipe.yaml``) with a ``recipe:`` block saying how it was chosen.

Test-split samples are never used as sources unless ``split: test`` is asked for
explicitly (and then a warning is recorded in the dataset card).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from defectforge.errors import ConfigError, InputError

MAX_SAMPLES = 10_000_000
FORMATS = ("mvtec", "yolo", "coco")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    split: str = "train"
    good: int | list[str] | None = None
    real_defects: bool = True
    roi: str = "auto"
    roi_margin: int = Field(8, ge=0)
    hosts: Literal["all", "similar"] = "all"
    hosts_top: float = Field(0.25, gt=0, le=1)


class GeneratorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(1.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class LabelConfig(BaseModel):
    """Options of :func:`defectforge.synth2d.labels.derive_label`."""

    model_config = ConfigDict(extra="forbid")
    tau_min: float = 2.0
    min_fill: float = 0.05
    max_leak: float = 0.1
    merge_radius: int = 3
    min_area: int = 4


class SynthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: SourceConfig
    generators: list[GeneratorSpec]
    n: int | None = None
    counts: dict[str, int] | None = None
    seed: int = 0
    formats: list[Literal["mvtec", "yolo", "coco"]] = Field(default_factory=list)
    max_attempts: int = Field(10, ge=1, le=1000)
    label: LabelConfig = Field(default_factory=LabelConfig)
    png_compression: int = Field(3, ge=0, le=9)
    out: str | None = None
    """Output folder (the CLI's --out overrides it); not part of the fingerprint."""
    recipe: dict[str, Any] | None = None
    """Provenance of a searched recipe (detector, validation scores, search settings);
    recorded with the run, never changes what is generated."""

    @model_validator(mode="after")
    def _check(self) -> "SynthConfig":
        if not self.generators:
            raise ValueError("at least one generator is needed")
        if (self.n is None) == (self.counts is None):
            raise ValueError("give exactly one of 'n' (total) or 'counts' (per defect type)")
        if self.n is not None and not (1 <= self.n <= MAX_SAMPLES):
            raise ValueError(f"impossible count n={self.n}: must be between 1 and {MAX_SAMPLES}")
        if self.counts is not None:
            if not self.counts:
                raise ValueError("'counts' is empty")
            for k, v in self.counts.items():
                if not (1 <= v <= MAX_SAMPLES):
                    raise ValueError(f"impossible count {k}={v}: must be between 1 and {MAX_SAMPLES}")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that affects the output bytes (not workers or paths shown)."""
        d = self.model_dump(mode="json", exclude={"out"})
        if self.source.hosts == "all":  # (the fingerprint of configs written before the option)
            del d["source"]["hosts"], d["source"]["hosts_top"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def parse_config(data: dict[str, Any], where: str | Path | None = None) -> SynthConfig:
    try:
        return SynthConfig.model_validate(data)
    except ValidationError as exc:
        from defectforge.synth2d.base import _pydantic_msg

        msg = _pydantic_msg(exc)
        if where is not None:
            raise InputError(where, f"invalid synth config: {msg}") from None
        raise ConfigError(f"invalid synth config: {msg}") from None


def load_config(path: str | Path) -> SynthConfig:
    """Read a YAML (or JSON) synth config; relative ``source.path`` is resolved against
    the config file's folder."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "config file not found")
    from defectforge.data._files import read_text

    try:
        data = yaml.safe_load(read_text(p))
    except yaml.YAMLError as exc:
        raise InputError(p, f"not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise InputError(p, "config must be a mapping (source:, generators:, counts: or n:, seed:)")
    src = data.get("source")
    if isinstance(src, dict) and "path" in src and not Path(str(src["path"])).is_absolute():
        src["path"] = str((p.parent / str(src["path"])).resolve())
    if data.get("out") and not Path(str(data["out"])).is_absolute():
        data["out"] = str((p.parent / str(data["out"])).resolve())
    cfg = parse_config(data, p)
    check_generator_params(cfg, p)
    return cfg


def check_generator_params(cfg: SynthConfig, where: str | Path) -> None:
    """Each generator's ``params`` checked by its config model (finite numbers, ranges
    low <= high, bounded sizes and counts) when the file is read, so a bad value is one line
    naming the file instead of a failure deep in rendering. A generator name that is not
    registered is left to the run (which names the choices)."""
    from defectforge.synth2d.base import _pydantic_msg, generator_class

    for i, g in enumerate(cfg.generators):
        try:
            cls = generator_class(g.name)
        except ConfigError:
            continue
        try:
            cls.Config(**g.params)
        except ValidationError as exc:
            raise InputError(where, f"invalid synth config: generators[{i}] {g.name!r}: {_pydantic_msg(exc)}") from None
