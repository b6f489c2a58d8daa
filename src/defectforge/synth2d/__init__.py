"""Weight-free 2D defect synthesis with exact labels.

Generators (``pitting``, ``scratch``, ``crack``, ``stain``, ``dent``, ``texture``,
``cutpaste``, ``cutpaste_scar``, ``transplant``) share one contract,
``generate(image, rng, roi=None) -> SynthResult(image, mask, meta)``; every output's
label is derived from the pixel change (:func:`derive_label`); :func:`synthesize` runs a
resumable, deterministic, parallel pipeline with exports; :func:`generate_samples` makes
labelled samples in memory.
"""

from defectforge.synth2d.base import (
    Generator, GeneratorConfig, RealDefect, SynthResult, config_schema, generator_class, get_generator,
    list_generators, register_generator,
)
from defectforge.synth2d.config import SynthConfig, load_config, parse_config
from defectforge.synth2d.labels import LabelResult, derive_label
from defectforge.synth2d.masks import MaskStats
from defectforge.synth2d.pipeline import SynthRun, generate_samples, real_defects_from, seed_for, synthesize

__all__ = [
    "Generator", "GeneratorConfig", "LabelResult", "MaskStats", "RealDefect", "SynthConfig", "SynthResult",
    "SynthRun", "config_schema", "derive_label", "generate_samples", "generator_class", "get_generator",
    "list_generators", "load_config", "parse_config", "real_defects_from", "register_generator", "seed_for",
    "synthesize",
]
