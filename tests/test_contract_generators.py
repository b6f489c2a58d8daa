"""The generator contract, checked for every registered 2D generator (``GENERATORS``).

For each: the config round-trips (keyword parameters, JSON), an unknown parameter is a
one-line ``ConfigError`` naming the generator, ``fit(real)`` returns ``self``, a generator
that needs real defects refuses to generate before ``fit``, the output differs from the
input only inside its mask (the exact label), the same seed gives the same sample and the
sampled parameters are JSON.

A new registered name without settings in ``TINY`` fails here on purpose: add them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectforge.errors import ConfigError
from defectforge.synth2d.base import GENERATORS, RealDefect, get_generator, list_generators

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {name: {} for name in ("pitting", "scratch", "crack", "stain", "dent", "texture", "cutpaste",
                              "cutpaste_scar", "transplant", "fitted")}
TINY["inpaint-diffusion"] = {"resolution": 64, "num_inference_steps": 2, "mask": "ellipse", "preset": "none"}
NAMES = [n for n in list_generators() if not n.startswith("test_")]  # test_* are other tests' plug-ins


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random SDXL inpainting folder (built offline) for the diffusion generator."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from defectforge.synth2d.diffusion.tiny import build_tiny_inpaint_pipeline

    return build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("models") / "tiny", kind="sdxl", seed=0)


def _settings(name: str, request) -> dict:
    if name not in TINY:
        pytest.fail(f"registered generator {name!r} has no settings in TINY: add them")
    kw = dict(TINY[name])
    if name == "inpaint-diffusion":
        kw["model"] = str(request.getfixturevalue("tiny_model"))
    return kw


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = 110 + rng.normal(0, 1, (96, 1)) * 10 + rng.normal(0, 5, (96, 128))
    return np.clip(g, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)


def _real() -> list[RealDefect]:
    img = _image(3)[20:60, 30:80].copy()
    m = np.zeros(img.shape[:2], bool)
    m[12:28, 10:40] = True
    img[m] = 30
    return [RealDefect(img, m, source="real0", center_yx=(0.4, 0.45), image_shape=(96, 128))]


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_and_bad_parameters_are_one_line(name, request):
    kw = _settings(name, request)
    g = get_generator(name, **kw)
    assert GENERATORS.get(name) is type(g) and g.name == name
    again = type(g)(**g.config.model_dump())
    assert again.config == g.config
    assert type(g).Config.model_validate_json(g.config.model_dump_json()) == g.config
    with pytest.raises(ConfigError) as exc:
        get_generator(name, **kw, no_such_option=1)
    assert name in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="unknown generator"):
        get_generator(name + "-nope")


@pytest.mark.parametrize("name", NAMES)
def test_fit_generate_exact_mask_and_seeded(name, request):
    g = get_generator(name, **_settings(name, request))
    img = _image()
    if g.needs_real:
        with pytest.raises(ConfigError, match="real defects"):
            g.generate(img, np.random.default_rng(0))
    assert g.fit(_real()) is g
    a = g.generate(img, np.random.default_rng(5))
    b = g.generate(img, np.random.default_rng(5))
    assert a.image.shape == img.shape and a.image.dtype == np.uint8
    assert a.mask.shape == img.shape[:2] and a.mask.dtype == bool and a.mask.any()
    assert np.array_equal(a.image[~a.mask], img[~a.mask]), "pixels outside the mask must not change"
    timing = ("seconds",)  # wall-clock time is the one field a seed does not fix
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert {k: v for k, v in a.meta.items() if k not in timing} == {k: v for k, v in b.meta.items() if k not in timing}
    assert a.meta["generator"] == name
    json.dumps(a.meta)
    roi = np.zeros(img.shape[:2], bool)
    roi[:, 64:] = True
    c = g.generate(img, np.random.default_rng(6), roi=roi)
    assert not (c.mask & ~roi).any(), "the mask stays inside the region of interest"


def test_every_generator_has_settings():
    assert set(NAMES) <= set(TINY)
