"""Diffusion inpainting backend on a tiny random SDXL pipeline (offline, CPU).

The pipeline is built once per module with the offline tokenizer recipe, saved to a temp
folder and loaded back through ``load_inpaint_pipeline``; every call runs 1-2 steps at 64 px.
Behaviour only (shapes, exact background, seeding, errors, LoRA effect, loss decrease),
never image quality.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from defectforge.errors import ConfigError, InputError  # noqa: E402
from defectforge.synth2d.base import RealDefect, get_generator  # noqa: E402
from defectforge.synth2d.diffusion import LoraSpec  # noqa: E402  (registers inpaint-diffusion)
from defectforge.synth2d.diffusion.inpaint import crop_box, inpaint_batch  # noqa: E402
from defectforge.synth2d.diffusion.loading import (check_model_folder, load_inpaint_pipeline,  # noqa: E402
                                                   resolve_dtype)
from defectforge.synth2d.diffusion.lora_train import LoraTrainConfig, LoraTrainer, make_items  # noqa: E402
from defectforge.synth2d.diffusion.tiny import build_tiny_inpaint_pipeline  # noqa: E402

RES = 64
FAST = dict(resolution=RES, num_inference_steps=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("models") / "tiny-sdxl-inpaint", kind="sdxl", seed=0)


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    return load_inpaint_pipeline(tiny_dir, device="auto")


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((h, w, 3), 140, np.uint8)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), bool)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = True
    return m


def _real_defect() -> RealDefect:
    m = np.zeros((14, 18), bool)
    m[3:11, 4:15] = True
    return RealDefect(_image(14, 18, 9), m, "real_0", (0.5, 0.4), (48, 96))


# -- loading ---------------------------------------------------------------------------------------
def test_loads_tiny_pipeline_through_our_loader(pipe):
    import torch

    assert type(pipe).__name__ == "StableDiffusionXLInpaintPipeline"
    assert pipe.unet.config.in_channels == 9
    assert pipe.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if pipe.device.type == "cpu":
        assert pipe.unet.dtype == torch.float32


def test_missing_pieces_are_named(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer_2")
    with pytest.raises(InputError) as ei:
        load_inpaint_pipeline(broken)
    msg = str(ei.value)
    assert str(broken) in msg
    assert "unet/diffusion_pytorch_model.safetensors" in msg and "tokenizer_2/" in msg
    assert "vae" not in msg.split("missing:")[1].split(".")[0]  # complete parts are not listed
    (broken / "model_index.json").unlink()
    with pytest.raises(InputError, match="model_index.json"):
        load_inpaint_pipeline(broken)


def test_fp16_only_folder_picks_the_variant(tiny_dir, tmp_path):
    d = tmp_path / "fp16only"
    shutil.copytree(tiny_dir, d)
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        for f in (d / sub).glob("*.safetensors"):
            f.rename(f.with_name(f.name.replace(".safetensors", ".fp16.safetensors")))
    assert check_model_folder(d).variant == "fp16"
    assert check_model_folder(tiny_dir).variant is None


def test_hub_ids_single_files_and_bad_paths_are_refused(tmp_path):
    with pytest.raises(InputError, match="never downloads"):
        load_inpaint_pipeline("diffusers/stable-diffusion-xl-1.0-inpainting-0.1")
    with pytest.raises(InputError, match="not found"):
        load_inpaint_pipeline(tmp_path / "nothing-here")
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="single_file_config"):
        load_inpaint_pipeline(ckpt)
    with pytest.raises(InputError, match="model_index.json"):
        load_inpaint_pipeline(ckpt, single_file_config=tmp_path)


def test_fp16_on_cpu_is_a_config_error():
    with pytest.raises(ConfigError, match="float16"):
        resolve_dtype("float16", "cpu")


# -- inference ---------------------------------------------------------------------------------------
def test_crop_box_contains_mask_and_has_aspect():
    m = _mask(60, 120, (20, 50, 30, 58))
    y0, x0, y1, x1 = crop_box(m, 2, aspect=2.0)
    assert y0 <= 18 and x0 <= 48 and y1 >= 32 and x1 >= 60
    assert abs((x1 - x0) / (y1 - y0) - 2.0) < 0.1
    assert 0 <= y0 and 0 <= x0 and y1 <= 60 and x1 <= 120


@pytest.mark.parametrize("native", [False, True], ids=["batched-crop", "diffusers-crop"])
def test_inpaint_keeps_every_pixel_outside_the_mask(pipe, native):
    imgs = [_image(48, 96, 1), _image(48, 96, 2), _image(40, 40, 3)]
    masks = [_mask(48, 96, (10, 20, 22, 40)), _mask(48, 96, (30, 60, 44, 90)), _mask(40, 40, (5, 5, 20, 15))]
    outs = inpaint_batch(pipe, imgs, masks, ["dark pits"] * 3, ["smooth"] * 3, [1, 2, 3], guidance_scale=20.0,
                         strength=0.99, padding_mask_crop=2, native_crop=native, **FAST)
    assert len(outs) == 3
    for img, m, o in zip(imgs, masks, outs):
        assert o.image.shape == img.shape and o.image.dtype == np.uint8
        assert np.array_equal(o.image[~m], img[~m])  # exact outside the mask
        assert (o.image[m] != img[m]).any()  # the model painted inside
        assert o.leak > 0  # the raw output did differ outside: paste-back mattered


def test_inpaint_rejects_bad_inputs(pipe):
    img = _image(32, 32, 0)
    with pytest.raises(InputError, match="mask is empty"):
        inpaint_batch(pipe, [img], [np.zeros((32, 32), bool)], ["x"], [None], [0], **FAST)
    with pytest.raises(InputError, match="does not match"):
        inpaint_batch(pipe, [img], [np.ones((16, 16), bool)], ["x"], [None], [0], **FAST)
    with pytest.raises(ConfigError, match="no denoising step"):
        inpaint_batch(pipe, [img], [np.ones((32, 32), bool)], ["x"], [None], [0], resolution=RES,
                      num_inference_steps=1, strength=0.5)


# -- generator -----------------------------------------------------------------------------------------
def test_generator_registers_without_importing_diffusers():
    code = ("import sys, defectforge.synth2d.diffusion.cli, defectforge.prompts;"
            "from defectforge.synth2d.base import list_generators;"
            "assert 'inpaint-diffusion' in list_generators();"
            "print(sorted(m for m in ('diffusers', 'transformers', 'peft', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_exdd_preset_values_and_overrides(tiny_dir):
    g = get_generator("inpaint-diffusion", model=str(tiny_dir), preset="exdd", num_inference_steps=2)
    c = g.config
    assert (c.guidance_scale, c.strength, c.padding_mask_crop, c.resolution) == (20.0, 0.99, 2, 1024)
    assert c.negative_prompt == "smooth, plain, black, dark, shadow" and c.mask == "real"
    assert c.num_inference_steps == 2  # override wins
    with pytest.raises(ConfigError):
        get_generator("inpaint-diffusion", model=str(tiny_dir), preset="nope")
    with pytest.raises(ConfigError):
        get_generator("inpaint-diffusion", model=str(tiny_dir), mask="mask_dir")  # needs mask_dir


def test_generator_real_mask_seeded_and_exact(tiny_dir):
    g = get_generator("inpaint-diffusion", model=str(tiny_dir), preset="exdd", defect_type="pitting", **FAST)
    with pytest.raises(ConfigError, match="real defects"):
        g.generate(_image(48, 96, 0), np.random.default_rng(0))
    real = _real_defect()
    g.fit([real])
    img = _image(48, 96, 4)
    a = g.generate(img, np.random.default_rng(7))
    b, c = g.generate_batch([img, img], [np.random.default_rng(7), np.random.default_rng(8)])
    assert a.image.shape == img.shape and a.mask.shape == img.shape[:2]
    assert a.mask.sum() == real.mask.sum()  # the real shape, placed as is (exdd: no jitter)
    assert np.array_equal(a.image[~a.mask], img[~a.mask])
    assert a.meta["seed"] == b.meta["seed"] and np.array_equal(a.image, b.image)  # same rng -> same sample
    assert a.meta["seed"] != c.meta["seed"] and not np.array_equal(a.image, c.image)
    assert a.meta["negative_prompt"] == "smooth, plain, black, dark, shadow"
    assert "pit" in a.meta["prompt"] and a.meta["prompt_source"] == "template"
    json.dumps(a.meta)


def test_generator_mask_dir_and_procedural_masks(tiny_dir, tmp_path):
    from defectforge.data.image_io import write_mask

    md = tmp_path / "masks"
    write_mask(md / "a.png", _mask(24, 48, (4, 8, 12, 30)))
    g = get_generator("inpaint-diffusion", model=str(tiny_dir), preset="none", mask="mask_dir", mask_dir=str(md),
                      prompt="a dark scratch", **FAST)
    img = _image(48, 96, 5)
    r = g.generate(img, np.random.default_rng(1))
    assert r.mask.sum() == (16 * 44)  # resized x2 to the image, ExDD style
    assert r.meta["prompt"] == "a dark scratch" and np.array_equal(r.image[~r.mask], img[~r.mask])
    g2 = get_generator("inpaint-diffusion", model=str(tiny_dir), preset="none", mask="ellipse",
                       mask_params={"size": (8, 14)}, padding_mask_crop=4, **FAST)
    r2 = g2.generate(img, np.random.default_rng(2))
    assert 10 < r2.mask.sum() < 400 and np.array_equal(r2.image[~r2.mask], img[~r2.mask])


# -- LoRA ---------------------------------------------------------------------------------------------
def _toy_defects(n: int = 3):
    rng = np.random.default_rng(0)
    imgs, masks = [], []
    for k in range(n):
        im = np.clip(150 + rng.normal(0, 8, (80, 80, 3)), 0, 255).astype(np.uint8)
        m = _mask(80, 80, (30, 25 + 5 * k, 45, 40 + 5 * k))
        im[m] = 40
        imgs.append(im)
        masks.append(m)
    return imgs, masks


def _train_cfg(tiny_dir, out, **kw) -> LoraTrainConfig:
    base = dict(model=str(tiny_dir), out=str(out), instance_prompt="dark pit", rank=4, lr=3e-2, steps=20,
                resolution=RES, min_crop=32, checkpoint_every=10, samples=1, sample_steps=1, seed=0)
    return LoraTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    cfg = _train_cfg(tiny_dir, out)
    imgs, masks = _toy_defects()
    items = make_items(imgs, masks, cfg)
    trainer = LoraTrainer(cfg, pipe=load_inpaint_pipeline(tiny_dir))  # own pipeline: training adds an adapter
    before = trainer.loss_at(items)
    res = trainer.fit(items)
    after = trainer.loss_at(items)
    return res, before, after


def test_training_reduces_the_loss(trained):
    res, before, after = trained
    assert len(res.losses) == 20 and all(np.isfinite(res.losses))
    assert after < 0.97 * before  # same fixed noise and timesteps before/after
    assert np.mean(res.losses[-7:]) < np.mean(res.losses[:7])


def test_training_writes_weights_checkpoints_and_samples(trained):
    from PIL import Image

    res, _, _ = trained
    assert res.weights.name == "pytorch_lora_weights.safetensors" and res.weights.is_file()
    assert sorted(p.name for p in (res.out_dir / "checkpoints").iterdir()) == ["step-0000010", "step-0000020"]
    assert Image.open(res.samples).size == (3 * 256, 256)  # source | mask | inpainted
    assert json.loads((res.out_dir / "losses.json").read_text())["losses"] == pytest.approx(res.losses)


def test_lora_round_trip_changes_the_output(trained, tiny_dir):
    res, _, _ = trained
    img = _image(48, 96, 6)
    kw = dict(model=str(tiny_dir), preset="none", mask="ellipse", mask_params={"size": (10, 16)}, prompt="dark pit",
              **FAST)
    base = get_generator("inpaint-diffusion", **kw).generate(img, np.random.default_rng(3))
    with_lora = get_generator("inpaint-diffusion", lora=[{"path": str(res.out_dir), "weight": 1.0}],
                              **kw).generate(img, np.random.default_rng(3))
    zero = get_generator("inpaint-diffusion", lora=[LoraSpec(path=str(res.weights), weight=0.0, name="z")],
                         **kw).generate(img, np.random.default_rng(3))
    again = get_generator("inpaint-diffusion", **kw).generate(img, np.random.default_rng(3))  # LoRA switched off
    assert np.array_equal(base.mask, with_lora.mask)
    assert not np.array_equal(base.image, with_lora.image)
    assert np.array_equal(with_lora.image[~base.mask], img[~base.mask])
    assert np.abs(zero.image.astype(int) - base.image.astype(int)).max() <= 1
    assert np.array_equal(again.image, base.image)
    assert with_lora.meta["lora"][0][1] == 1.0


def test_lora_missing_file_is_an_input_error(tiny_dir, tmp_path):
    g = get_generator("inpaint-diffusion", model=str(tiny_dir), preset="none", mask="ellipse", prompt="x",
                      lora=[{"path": str(tmp_path / "none.safetensors")}], **FAST)
    with pytest.raises(InputError, match="LoRA adapter not found"):
        g.generate(_image(48, 96, 0), np.random.default_rng(0))


def test_resume_continues_exactly(tiny_dir, tmp_path):
    imgs, masks = _toy_defects(2)
    kw = dict(lr=1e-3, samples=0, checkpoint_every=2)
    cfg_full = _train_cfg(tiny_dir, tmp_path / "full", steps=4, **kw)
    items = make_items(imgs, masks, cfg_full)
    full = LoraTrainer(cfg_full, pipe=load_inpaint_pipeline(tiny_dir)).fit(items)
    part = LoraTrainer(_train_cfg(tiny_dir, tmp_path / "split", steps=2, **kw),
                       pipe=load_inpaint_pipeline(tiny_dir)).fit(items)
    assert len(part.losses) == 2
    cfg_more = _train_cfg(tiny_dir, tmp_path / "split", steps=4, **kw)
    with pytest.raises(ConfigError, match="resume"):
        LoraTrainer(cfg_more, pipe=load_inpaint_pipeline(tiny_dir)).fit(items)
    resumed = LoraTrainer(cfg_more, pipe=load_inpaint_pipeline(tiny_dir)).fit(items, resume=True)
    assert resumed.resumed_from == 2
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)  # same start, same RNG stream
    with pytest.raises(ConfigError, match="different"):
        LoraTrainer(_train_cfg(tiny_dir, tmp_path / "split", steps=6, rank=8, **kw),
                    pipe=load_inpaint_pipeline(tiny_dir)).fit(items, resume=True)


# -- CLI ------------------------------------------------------------------------------------------------
def _app():
    import typer

    from defectforge.synth2d.diffusion.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_cli_lora_train_and_check(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from defectforge.data.image_io import write_image, write_mask

    imgs, masks = _toy_defects(2)
    rows = ["file,split,label,mask"]
    for k, (im, m) in enumerate(zip(imgs, masks)):
        write_image(tmp_path / "data" / f"d{k}.png", im)
        write_mask(tmp_path / "data" / f"d{k}_mask.png", m)
        rows.append(f"d{k}.png,train,pitting,d{k}_mask.png")
    write_image(tmp_path / "data" / "g.png", imgs[0])
    rows.append("g.png,train,good,")
    (tmp_path / "data" / "split.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "lora"
    r = CliRunner().invoke(_app(), ["lora", "train", str(tmp_path / "data"), "--base-model", str(tiny_dir), "--prompt",
                                    "dark pit", "--out", str(out), "--steps", "2", "--resolution", str(RES),
                                    "--samples", "1", "--sample-steps", "1", "--lr", "1e-3"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "samples.png").is_file()
    r = CliRunner().invoke(_app(), ["diffusion", "check", str(tiny_dir)])
    assert r.exit_code == 0 and "StableDiffusionXLInpaintPipeline" in r.output
    r = CliRunner().invoke(_app(), ["diffusion", "check", str(tmp_path / "data")])
    assert isinstance(r.exception, InputError) and "model_index.json" in str(r.exception)
    r = CliRunner().invoke(_app(), ["lora", "train", str(tmp_path / "data"), "--base-model", str(tiny_dir), "--prompt",
                                    "x", "--out", str(tmp_path / "l2"), "--defect", "scratch"])
    assert isinstance(r.exception, InputError) and "no defect images" in str(r.exception)


def test_synsur_without_lora_warns(tiny_dir):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        get_generator("inpaint-diffusion", model=str(tiny_dir), preset="synsur")
    assert any("LoRA" in str(x.message) for x in w)


# -- through the synthesis engine ---------------------------------------------------------------------
def test_engine_runs_the_exdd_preset_with_derived_labels(tiny_dir, tmp_path):
    from defectforge.data.image_io import read_mask, write_image, write_mask
    from defectforge.synth2d.config import parse_config
    from defectforge.synth2d.pipeline import synthesize

    data = tmp_path / "data"
    rows = ["file,split,label,mask"]
    for k in range(2):
        write_image(data / f"g{k}.png", _image(48, 96, 20 + k))
        rows.append(f"g{k}.png,train,good,")
    d = _image(48, 96, 30)
    m = _mask(48, 96, (18, 30, 28, 44))
    d[m] = 60
    write_image(data / "d0.png", d)
    write_mask(data / "d0_mask.png", m)
    rows.append("d0.png,train,pitting,d0_mask.png")
    (data / "split.csv").write_text("\n".join(rows) + "\n")
    cfg = parse_config({"source": {"path": str(data), "roi": "none"}, "n": 2, "seed": 0,
                        "generators": [{"name": "inpaint-diffusion",
                                        "params": {"model": str(tiny_dir), "preset": "exdd", **FAST}}]})
    run = synthesize(cfg, tmp_path / "out", workers=1)
    assert run.written == 2 and run.failed == 0
    for s in run.samples:
        assert s.label == "pitting"
        lab = read_mask(s.mask_path)
        assert 0 < lab.sum() <= m.sum()  # derived label: inside the repainted real-mask region


def test_sd_inpainting_family_loads_inpaints_and_trains(tmp_path):
    sd_dir = build_tiny_inpaint_pipeline(tmp_path / "tiny-sd", kind="sd", seed=1)
    p = load_inpaint_pipeline(sd_dir)
    assert type(p).__name__ == "StableDiffusionInpaintPipeline"
    img, m = _image(40, 56, 1), _mask(40, 56, (10, 10, 24, 30))
    (o,) = inpaint_batch(p, [img], [m], ["dark pit"], [None], [0], padding_mask_crop=2, **FAST)
    assert o.image.shape == img.shape and np.array_equal(o.image[~m], img[~m])
    imgs, masks = _toy_defects(1)
    cfg = _train_cfg(sd_dir, tmp_path / "lora-sd", steps=2, samples=0, lr=1e-3)
    res = LoraTrainer(cfg, pipe=p).fit(make_items(imgs, masks, cfg))
    assert len(res.losses) == 2 and res.weights.is_file()


def test_scheduler_can_be_swapped_per_generator(tiny_dir):
    kw = dict(model=str(tiny_dir), preset="none", mask="ellipse", mask_params={"size": (10, 16)}, prompt="pit",
              resolution=RES, num_inference_steps=3)  # 2 denoising steps: one step gives the same x0 estimate
    img = _image(48, 96, 8)
    a = get_generator("inpaint-diffusion", scheduler="DDIMScheduler", **kw).generate(img, np.random.default_rng(4))
    b = get_generator("inpaint-diffusion", **kw).generate(img, np.random.default_rng(4))
    assert a.meta["scheduler"] == "DDIMScheduler" and b.meta["scheduler"] == "EulerDiscreteScheduler"
    assert not np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    with pytest.raises(ConfigError, match="unknown diffusers scheduler"):
        get_generator("inpaint-diffusion", scheduler="NoSuchScheduler", **kw).generate(img, np.random.default_rng(4))
