"""2D generators: exact masks, determinism, ROI, registry, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.errors import ConfigError, InputError
from defectforge.synth2d import (
    Generator, GeneratorConfig, RealDefect, SynthResult, derive_label, get_generator, list_generators,
    register_generator,
)

SMALL = {  # parameters that fit 96 x 128 test images
    "pitting": {"area": (30.0, 200.0)},
    "scratch": {},
    "crack": {},
    "stain": {},
    "dent": {},
    "texture": {"size": (0.2, 0.4)},
    "texture_sk": {"source": "skimage", "size": (0.2, 0.4)},
    "cutpaste": {"area": (0.02, 0.06)},
    "cutpaste_scar": {},
    "transplant": {},
}


def _image(seed: int = 0, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 90 + 60 * (xx / w) + 20 * np.sin(yy / 7.0)
    img = base[..., None] * np.array([1.0, 0.95, 0.8]) + rng.normal(0, 4, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _real() -> list[RealDefect]:
    img = _image(5, 40, 40)
    m = np.zeros((40, 40), bool)
    m[14:26, 12:28] = True
    img[m] = (img[m] * 0.4).astype(np.uint8)
    return [RealDefect(img, m, "real0", (0.5, 0.5), (96, 128))]


def _make(key: str):
    name = "texture" if key == "texture_sk" else key
    g = get_generator(name, **SMALL[key])
    if name == "transplant":
        g.fit(_real())
    return g


@pytest.mark.parametrize("key", list(SMALL))
def test_mask_exact_deterministic_and_in_roi(key):
    g = _make(key)
    img = _image()
    before = img.copy()
    r = g.generate(img, np.random.default_rng(3))
    assert isinstance(r, SynthResult)
    assert np.array_equal(img, before), "input image must not be modified"
    assert r.image.shape == img.shape and r.image.dtype == np.uint8 and r.mask.dtype == bool
    changed = (r.image != img).any(axis=2)
    assert changed.any() and r.mask.any()
    assert not (changed & ~r.mask).any(), "pixels changed outside the mask"
    # the generator's own label: visible change inside the mask
    lab = derive_label(img, r.image, r.mask)
    assert not (lab.mask & ~r.mask).any()
    # determinism
    r2 = _make(key).generate(img, np.random.default_rng(3))
    assert r2.image.tobytes() == r.image.tobytes() and np.array_equal(r2.mask, r.mask)
    assert r2.meta == r.meta
    r3 = _make(key).generate(img, np.random.default_rng(4))
    assert r3.image.tobytes() != r.image.tobytes()
    # region of interest: right 60 % only
    roi = np.zeros(img.shape[:2], bool)
    roi[4:-4, 50:-4] = True
    for s in range(3):
        rr = _make(key).generate(img, np.random.default_rng(10 + s), roi=roi)
        assert rr.mask.any()
        assert not ((rr.image != img).any(axis=2) & ~roi).any(), "change outside the ROI"
        assert not (rr.mask & ~roi).any()


def test_default_roi_keeps_border_free():
    img = _image()
    for s in range(5):
        r = get_generator("pitting", area=(30.0, 200.0), roi_margin=8).generate(img, np.random.default_rng(s))
        assert not r.mask[:8].any() and not r.mask[-8:].any() and not r.mask[:, :8].any() and not r.mask[:, -8:].any()


def test_all_builtin_generators_registered():
    names = list_generators()
    for n in ("pitting", "scratch", "crack", "stain", "dent", "texture", "cutpaste", "cutpaste_scar", "transplant"):
        assert n in names


def test_unknown_generator_lists_known_names():
    with pytest.raises(ConfigError) as e:
        get_generator("nope")
    assert "nope" in str(e.value) and "pitting" in str(e.value) and "\n" not in str(e.value)


def test_bad_parameter_is_config_error():
    with pytest.raises(ConfigError, match="pitting"):
        get_generator("pitting", no_such_option=1)


def test_defect_type_is_configurable():
    assert get_generator("pitting").defect_type == "pitting"
    assert get_generator("scratch", defect_type="mark").defect_type == "mark"


def test_plugin_registration():
    class InvertConfig(GeneratorConfig):
        defect_type: str = "inverted"
        size: int = 10

    @register_generator("test_invert_square")
    class Invert(Generator):
        Config = InvertConfig

        def _render(self, image, rng, roi):
            s = self.config.size
            y, x = int(rng.integers(0, image.shape[0] - s)), int(rng.integers(0, image.shape[1] - s))
            out = image.copy()
            out[y:y + s, x:x + s] = 255 - out[y:y + s, x:x + s]
            m = np.zeros(image.shape[:2], bool)
            m[y:y + s, x:x + s] = True
            return out, m, {"yx": [y, x]}

    g = get_generator("test_invert_square", size=8)
    assert "test_invert_square" in list_generators()
    r = g.generate(_image(), np.random.default_rng(0))
    assert r.mask.sum() == 64 and r.meta["generator"] == "test_invert_square"
    with pytest.raises(ConfigError, match="already registered"):
        register_generator("pitting")(Invert)


def test_transplant_needs_real_defects():
    with pytest.raises(ConfigError, match="real defects"):
        get_generator("transplant").generate(_image(), np.random.default_rng(0))


def test_image_smaller_than_defect():
    tiny = _image(0, 12, 12)
    with pytest.raises(InputError, match="smaller than the defect"):
        get_generator("pitting", area=(400.0, 500.0), roi_margin=0).generate(tiny, np.random.default_rng(0))


def test_empty_roi():
    img = _image()
    with pytest.raises(InputError, match="region of interest is empty"):
        get_generator("scratch").generate(img, np.random.default_rng(0), roi=np.zeros(img.shape[:2], bool))


def test_roi_wrong_size():
    with pytest.raises(InputError, match="region of interest"):
        get_generator("scratch").generate(_image(), np.random.default_rng(0), roi=np.ones((5, 5), bool))


def test_wrong_image_type():
    with pytest.raises(InputError, match="uint8"):
        get_generator("scratch").generate(np.zeros((50, 50), np.float32), np.random.default_rng(0))


def test_texture_from_user_folder(tmp_path):
    from defectforge.data.image_io import write_image

    for i in range(2):
        write_image(tmp_path / f"t{i}.png", np.full((40, 40, 3), 20 + 200 * i, np.uint8))
    g = get_generator("texture", source="folder", folder=str(tmp_path), size=(0.2, 0.4), opacity=(1.0, 1.0))
    r = g.generate(_image(), np.random.default_rng(0))
    assert r.meta["texture"].startswith("folder[")
    vals = np.unique(r.image[r.mask].reshape(-1, 3), axis=0)
    assert len(vals) <= 8  # the flat texture (after colour jitter) fills the blob
    with pytest.raises(InputError, match="texture folder not found"):
        get_generator("texture", source="folder", folder=str(tmp_path / "nope")).generate(_image(), np.random.default_rng(0))


def test_pitting_with_real_masks_as_is_and_jittered():
    real = _real()
    g = get_generator("pitting", mask="real", jitter=False).fit(real)
    r = g.generate(_image(), np.random.default_rng(0))
    # reused as is: same shape as the real mask (12 x 16 box), possibly minus invisible rim pixels
    from defectforge.synth2d.masks import components

    (comp, (y0, x0, y1, x1)), = components(r.mask)
    assert (y1 - y0, x1 - x0) in ((12, 16), (14, 18))
    gj = get_generator("pitting", mask="real", jitter=True).fit(real)
    rj = gj.generate(_image(), np.random.default_rng(0))
    assert rj.mask.any() and rj.meta["clusters"][0]["shape"] == "real"


def _numeric_fields(name):
    """``(field, default)`` of every float / float-range parameter of generator ``name``."""
    from defectforge.synth2d import generator_class

    cfg = generator_class(name).Config
    out = []
    for f, info in cfg.model_fields.items():
        d = info.default
        items = d if isinstance(d, tuple) else (d,)
        if items and all(isinstance(x, float) for x in items):
            out.append((f, d))
    return out


@pytest.mark.parametrize("name", [n for n in list_generators() if n != "inpaint-diffusion"])
def test_every_float_parameter_of_every_generator_refuses_nan_and_inf(name):
    fields = _numeric_fields(name)
    assert fields, name
    for f, d in fields:
        for bad in (float("nan"), float("inf")):
            value = (bad, d[1]) if isinstance(d, tuple) else bad
            with pytest.raises(ConfigError, match=f"generator '{name}': {f}.*finite"):
                get_generator(name, **{f: value})


def test_ranges_need_low_le_high_and_sizes_are_bounded():
    with pytest.raises(ConfigError, match=r"darkness: a range \[low, high\] needs low <= high, got \[0.5, 0.2\]"):
        get_generator("pitting", darkness=(0.5, 0.2))
    with pytest.raises(ConfigError, match=r"pits_per_cluster: must be between 1 and 100, got \[1000000, 1000000\]"):
        get_generator("pitting", pits_per_cluster=(1_000_000, 1_000_000))
    with pytest.raises(ConfigError, match="clusters: must be between 1 and 50"):
        get_generator("pitting", clusters=(1, 10_000))
    with pytest.raises(ConfigError, match="area: must be between"):
        get_generator("cutpaste", area=(0.1, 50.0))
    get_generator("pitting", pits_per_cluster=(1, 100), clusters=(1, 50), area=(1.0, 1e6))  # the bounds themselves


def _synth_config(tmp_path, params):
    from badinput_kit import small_manifest

    root = small_manifest(tmp_path / "ds", 2, 2, split="train").parent
    cfg = tmp_path / "g.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"source": {"path": str(root)}, "n": 2,
                                   "generators": [{"name": "pitting", "params": params}]}))
    return cfg


@pytest.mark.parametrize("params,needle", [
    ({"darkness": [float("nan"), 0.5]}, "darkness.0: Input should be a finite number"),
    ({"pits_per_cluster": [1_000_000, 1_000_000]}, "pits_per_cluster: must be between 1 and 100"),
])
def test_synth_config_with_bad_generator_params_is_one_line_naming_the_file(tmp_path, params, needle):
    from badinput_kit import invoke, one_line_error

    cfg = _synth_config(tmp_path, params)
    res = invoke("synth", "-o", tmp_path / "out", "--config", cfg)
    one_line_error(res, "g.yaml", "generators[0] 'pitting'", needle)
    assert not (tmp_path / "out").exists()


def test_experiment_generator_params_nan_is_one_line(tmp_path):
    from badinput_kit import invoke, one_line_error, small_manifest

    root = small_manifest(tmp_path / "ds", 2, 2, split="train").parent
    res = invoke("experiment", "synsur-regimes", "--data", root, "-o", tmp_path / "out",
                 "--generator-params", '{"darkness": [NaN, 0.5]}')
    one_line_error(res, "generator 'pitting'", "darkness.0", "finite")
