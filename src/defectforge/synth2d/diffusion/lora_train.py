"""Fine-tune a LoRA on a few real defects with the inpainting objective.

Data: the user's real defect images with masks. Each training item is a crop around one
defect (its mask bounding box widened by ``context`` and made square), resized to
``resolution`` (:mod:`.lora_crops`; the settings are :mod:`.lora_config`'s). One step (DefectFill/diffusers-inpainting style):

1. VAE-encode the crop and the crop with the defect blanked out (``image * (1 - mask)``),
   scale by the VAE scaling factor; downsample the mask to the latent grid;
2. add DDPM noise at a random timestep;
3. UNet input = concat(noisy latents, mask, masked-image latents) = 9 channels, conditioned on
   the instance prompt (SDXL: both text encoders, pooled ``text_embeds`` and ``time_ids``);
4. loss = MSE to the noise (or velocity), weighted ``mask_weight`` inside the defect and 1
   outside, so the adapter learns what the defect looks like given its surroundings.

Only LoRA matrices on the UNet attention projections (``to_q/to_k/to_v/to_out.0``, rank
``rank``, peft) are trained. Checkpoints (adapter + optimizer + RNG state) are written
atomically every ``checkpoint_every`` steps and at the end; ``resume=True`` continues from the
newest one (also to extend a finished run with more ``steps``).
At the end: ``pytorch_lora_weights.safetensors`` (diffusers format, loadable with
:class:`~defectforge.synth2d.diffusion.lora.LoraSpec`), ``losses.json`` and ``samples.png``
(source | mask | inpainted with the LoRA, per training item).

Runs on GPU (fp16 frozen weights, fp32 LoRA, autocast); on CPU only tiny models are practical.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from defectforge._atomic import atomic_write_json
from defectforge.errors import ConfigError, InputError
from defectforge.synth2d.diffusion.lora_config import TARGET_MODULES, LoraTrainConfig, load_config  # noqa: F401
from defectforge.synth2d.diffusion.lora_crops import TrainItem, defect_crop, make_items  # noqa: F401

_FINGERPRINT_KEYS = ("model", "instance_prompt", "rank", "alpha", "resolution", "target_modules", "seed")
LORA_OUTPUTS = ("train_config.json", "checkpoints", "pytorch_lora_weights.safetensors", "losses.json", "samples.png")


@dataclass
class TrainResult:
    out_dir: Path
    weights: Path
    losses: list[float]
    steps_done: int
    resumed_from: int
    samples: Path | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# -- trainer ---------------------------------------------------------------------------------------
class LoraTrainer:
    """Trains a peft LoRA on the UNet of an inpainting pipeline. ``fit`` runs the loop;
    ``loss_at`` evaluates the objective on fixed noise/timesteps (for checks, not for training)."""

    def __init__(self, config: LoraTrainConfig, pipe=None):
        self.cfg = config
        self._pipe = pipe
        self._ready = False
        self.last_loss = float("nan")  # loss of the latest training step
        self._cache: dict[tuple, tuple] = {}

    # -- setup ------------------------------------------------------------------------------------
    def _setup(self) -> None:
        if self._ready:
            return
        import torch
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        from defectforge.synth2d.diffusion.loading import load_inpaint_pipeline, pipeline_kind, resolve_device

        cfg = self.cfg
        if self._pipe is None:
            self._pipe = load_inpaint_pipeline(cfg.model, kind=cfg.kind, device=cfg.device,
                                               dtype=None if cfg.dtype == "auto" else cfg.dtype,
                                               single_file_config=cfg.single_file_config)
        pipe = self._pipe
        self.device = pipe.device if hasattr(pipe, "device") else torch.device(resolve_device(cfg.device))
        self.kind = pipeline_kind(pipe)
        unet = pipe.unet
        if unet.config.in_channels != 9:
            raise ConfigError(f"{cfg.model}: LoRA inpainting training needs a 9-channel inpainting UNet "
                              f"(this one has {unet.config.in_channels})")
        self.weight_dtype = unet.dtype
        for m in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if m is not None:
                m.requires_grad_(False)
        pipe.vae.to(dtype=torch.float32)  # the SDXL VAE overflows in fp16
        lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha or cfg.rank, init_lora_weights="gaussian",
                          target_modules=list(cfg.target_modules))
        if "default" not in (getattr(unet, "peft_config", None) or {}):
            unet.add_adapter(lcfg)
        # peft draws the initial A matrices from the global RNG; redraw them from our seed
        # (gaussian, std 1/rank, B = 0 as in peft's "gaussian" init) so a run is reproducible.
        init = torch.Generator("cpu").manual_seed(cfg.seed)
        for name, p in unet.named_parameters():
            if not p.requires_grad:
                continue
            if ".lora_A." in name:
                p.data = torch.randn(p.shape, generator=init).div(cfg.rank).to(p.device)
            elif ".lora_B." in name:
                p.data = torch.zeros(p.shape, device=p.device)
            else:  # LoRA params train in fp32 even when the UNet is fp16
                p.data = p.data.float()
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.params = [p for p in unet.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"no UNet module matched target_modules {cfg.target_modules}")
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=1e-4)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        with torch.no_grad():
            if self.kind == "sdxl":
                pe, _, pooled, _ = pipe.encode_prompt(cfg.instance_prompt, device=self.device, num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
                r = cfg.resolution
                aesthetic = getattr(pipe.config, "requires_aesthetics_score", False)
                ids = [r, r, 0, 0, 6.0] if aesthetic else [r, r, 0, 0, r, r]
                self.cond = {"encoder_hidden_states": pe.to(self.weight_dtype),
                             "text_embeds": pooled.to(self.weight_dtype),
                             "time_ids": torch.tensor([ids], device=self.device, dtype=self.weight_dtype)}
            else:
                pe, _ = pipe.encode_prompt(cfg.instance_prompt, self.device, 1, False)
                self.cond = {"encoder_hidden_states": pe.to(self.weight_dtype)}
        self._ready = True

    @property
    def pipe(self):
        self._setup()
        return self._pipe

    # -- objective --------------------------------------------------------------------------------
    def _encode(self, items: Sequence[TrainItem], flips: Sequence[tuple[bool, bool]]):
        """VAE encodings of (flipped) items, cached: latent mean/std of the crop, latents of the
        crop with the defect blanked out, and the mask on the latent grid (each batch-stacked).
        The frozen VAE never changes, so every crop is encoded once per flip, not once per step."""
        import torch
        import torch.nn.functional as F

        vae = self._pipe.vae
        sf = vae.config.scaling_factor
        parts = []
        for it, (fh, fv) in zip(items, flips):
            key = (id(it), fh, fv)
            if key not in self._cache:
                im, mk = it.image, it.mask
                if fh:
                    im, mk = im[:, ::-1], mk[:, ::-1]
                if fv:
                    im, mk = im[::-1], mk[::-1]
                x = torch.from_numpy(np.ascontiguousarray(im)[None]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                m = torch.from_numpy(np.ascontiguousarray(mk)[None, None].astype(np.float32))
                x, m = x.to(self.device), m.to(self.device)
                with torch.no_grad():
                    dist = vae.encode(x).latent_dist
                    mlat = vae.encode(x * (m < 0.5)).latent_dist.mode() * sf
                    mlow = F.interpolate(m, size=mlat.shape[-2:], mode="nearest")
                self._cache[key] = (dist.mean * sf, dist.std * sf, mlat, mlow)
            parts.append(self._cache[key])
        return tuple(torch.cat([p[k] for p in parts]) for k in range(4))

    def _loss(self, enc, gen) -> "Any":
        import torch

        sched = self.noise_scheduler
        mean, std, mlat, mk = enc
        b = mean.shape[0]
        lat = mean + std * torch.randn(mean.shape, generator=gen, device="cpu").to(mean.device)
        noise = torch.randn(lat.shape, generator=gen, device="cpu").to(lat.device)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen, device="cpu").to(lat.device)
        noisy = sched.add_noise(lat, noise, t)
        inp = torch.cat([noisy, mk, mlat], dim=1).to(self.weight_dtype)
        kw: dict[str, Any] = {"encoder_hidden_states": self.cond["encoder_hidden_states"].expand(b, -1, -1)}
        if self.kind == "sdxl":
            kw["added_cond_kwargs"] = {"text_embeds": self.cond["text_embeds"].expand(b, -1),
                                       "time_ids": self.cond["time_ids"].expand(b, -1)}
        use_amp = self.device.type == "cuda" and self.weight_dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=use_amp):
            pred = self._pipe.unet(inp, t, return_dict=False, **kw)[0]
        if sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(lat, noise, t)
        else:
            target = noise
        w = 1.0 + (self.cfg.mask_weight - 1.0) * mk
        se = (pred.float() - target.float()) ** 2
        return (se * w).sum() / (w.sum() * se.shape[1])

    def loss_at(self, items: Sequence[TrainItem], seed: int = 1234, repeats: int = 4) -> float:
        """The objective averaged over ``repeats`` fixed draws of noise and timesteps (no update)."""
        import torch

        self._setup()
        gen = torch.Generator("cpu").manual_seed(seed)
        enc = self._encode(items, [(False, False)] * len(items))
        with torch.no_grad():
            return float(np.mean([self._loss(enc, gen).item() for _ in range(repeats)]))

    # -- loop -------------------------------------------------------------------------------------
    def fit(self, items: Sequence[TrainItem], resume: bool = False,
            progress: Callable[[str, int, int | None], None] | None = None,
            inputs: Sequence[str | Path] = ()) -> TrainResult:
        """Train for ``config.steps`` steps in total (continuing a checkpoint with ``resume``).
        ``progress("lora train", done, steps)`` follows :mod:`defectforge.progress`; the
        latest step's loss is ``self.last_loss``.

        The output folder follows :mod:`defectforge.runfolder`: locked while training, never
        overlapping the model folder or ``inputs`` (the training data), another run's
        settings refused."""
        cfg = self.cfg
        out = Path(cfg.out)
        with _open_run(out, cfg, [cfg.model, *inputs], check=self._setup) as rf:
            rf.write_artifact("train_config.json", json.dumps(cfg.model_dump(), indent=2) + "\n")
            return self._fit(rf.path, items, resume, progress)

    def _fit(self, out: Path, items: Sequence[TrainItem], resume: bool,
             progress: Callable[[str, int, int | None], None] | None) -> TrainResult:
        import torch

        cfg = self.cfg
        gen = torch.Generator("cpu").manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        losses: list[float] = []
        start = 0
        if resume:
            ck = latest_checkpoint(out)
            if ck is not None:
                start, losses = self._load_checkpoint(ck, gen, rng)
        elif latest_checkpoint(out) is not None:
            raise ConfigError(f"{out}: holds checkpoints of an earlier run; pass resume=True (--resume) to continue "
                              "it, or choose another output folder")
        t0 = time.perf_counter()
        unet = self._pipe.unet
        unet.train()
        for step in range(start, cfg.steps):
            idx = rng.integers(len(items), size=cfg.batch_size)
            flips = [(bool(cfg.flip and rng.random() < 0.5), bool(cfg.flip and rng.random() < 0.5)) for _ in idx]
            loss = self._loss(self._encode([items[i] for i in idx], flips), gen)
            if not torch.isfinite(loss):
                raise ConfigError(f"loss became {loss.item()} at step {step + 1}; "
                                  f"lower the learning rate (lr={cfg.lr})")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            losses.append(float(loss.item()))
            done = step + 1
            self.last_loss = losses[-1]
            if progress is not None:
                progress("lora train", done, cfg.steps)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                self._save_checkpoint(out, done, losses, gen, rng)
        unet.eval()
        weights = self.save_weights(out)
        atomic_write_json(out / "losses.json", {"losses": losses, "steps": cfg.steps})
        samples = None
        if cfg.samples > 0:
            samples = self.sample_grid(items[: cfg.samples], out / "samples.png")
        return TrainResult(out, weights, losses, cfg.steps, start, samples, time.perf_counter() - t0)

    # -- persistence ------------------------------------------------------------------------------
    def save_weights(self, out: Path) -> Path:
        """Write the adapter in diffusers format: ``out/pytorch_lora_weights.safetensors`` (atomic)."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        sd = convert_state_dict_to_diffusers(get_peft_model_state_dict(self._pipe.unet))
        sd = {k: v.detach().to("cpu").float().contiguous() for k, v in sd.items()}
        with tempfile.TemporaryDirectory(dir=out, prefix=".lora.", suffix=".tmp") as tmp:  # see runfolder
            type(self._pipe).save_lora_weights(tmp, unet_lora_layers=sd, safe_serialization=True)
            final = out / "pytorch_lora_weights.safetensors"
            os.replace(Path(tmp) / "pytorch_lora_weights.safetensors", final)
        return final

    def _save_checkpoint(self, out: Path, step: int, losses: list[float], gen, rng: np.random.Generator) -> Path:
        import torch
        from peft.utils import get_peft_model_state_dict

        ckdir = out / "checkpoints"
        ckdir.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=f".step-{step:07d}.", suffix=".tmp"))
        try:
            torch.save({"adapter": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self._pipe.unet).items()},
                        "optimizer": self.optimizer.state_dict(), "torch_rng": gen.get_state()}, tmp / "state.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, "losses": losses,
                                                        "numpy_rng": rng.bit_generator.state}, default=int))
            final = ckdir / f"step-{step:07d}"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in sorted(ckdir.glob("step-*"))[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _load_checkpoint(self, ck: Path, gen, rng: np.random.Generator) -> tuple[int, list[float]]:
        from peft.utils import set_peft_model_state_dict

        from defectforge.runfolder import load_state

        state = load_state(ck / "state.pt", "LoRA checkpoint")
        try:
            meta = json.loads((ck / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(ck, f"unreadable checkpoint ({exc})") from None
        set_peft_model_state_dict(self._pipe.unet, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["torch_rng"])
        rng.bit_generator.state = meta["numpy_rng"]
        return int(meta["step"]), list(meta["losses"])

    # -- samples ----------------------------------------------------------------------------------
    def sample_grid(self, items: Sequence[TrainItem], path: Path, tile: int = 256) -> Path:
        """Rows of (source crop | mask overlay | inpainted with the trained LoRA), saved as PNG."""
        from defectforge.data.image_io import write_image
        from defectforge.report.visual import mask_overlay
        from defectforge.synth2d.diffusion.inpaint import inpaint_batch

        cfg = self.cfg
        outs = inpaint_batch(self._pipe, [it.image for it in items], [it.mask for it in items],
                             [cfg.instance_prompt] * len(items), [""] * len(items),
                             [cfg.seed + k for k in range(len(items))], num_inference_steps=cfg.sample_steps,
                             guidance_scale=cfg.sample_guidance, strength=1.0, padding_mask_crop=None,
                             resolution=cfg.resolution)
        rows = []
        for it, o in zip(items, outs):
            cells = [it.image, mask_overlay(it.image, it.mask), o.image]
            rows.append(np.concatenate([cv2.resize(c, (tile, tile), interpolation=cv2.INTER_AREA) for c in cells], 1))
        return write_image(path, np.concatenate(rows, 0))


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``out/checkpoints`` (None if there is none)."""
    ckdir = Path(out) / "checkpoints"
    if not ckdir.is_dir():
        return None
    done = [d for d in sorted(ckdir.glob("step-*")) if (d / "state.json").is_file() and (d / "state.pt").is_file()]
    return done[-1] if done else None


def _open_run(out: Path, cfg: LoraTrainConfig, inputs: Sequence[str | Path], check: Callable[[], Any]):
    """The locked run folder; the settings that define the adapter must match to continue."""
    from defectforge.runfolder import STATE, RunFolder

    mine = cfg.model_dump()
    key = {k: mine[k] for k in _FINGERPRINT_KEYS}
    legacy = (out / "train_config.json").is_file() and not (out / STATE / "run.json").is_file()
    same = False
    if legacy:  # a folder written before run folders kept their state
        try:
            old = json.loads((out / "train_config.json").read_text())
        except (OSError, ValueError):
            old = {}
        diff = [k for k in _FINGERPRINT_KEYS if k in old and old[k] != mine[k]]
        if diff and latest_checkpoint(out) is not None:
            raise ConfigError(f"{out}: existing checkpoints were trained with different {', '.join(diff)}; "
                              "use another output folder")
        same = not diff
    return RunFolder.open(out, job="lora-train", config=key, inputs=inputs, outputs=LORA_OUTPUTS,
                          overwrite_flag=None, adopt=same, check=check)


def train_lora(config: LoraTrainConfig | dict[str, Any], images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
               sources: Sequence[str] | None = None, resume: bool = False, pipe=None,
               progress: Callable[[str, int, int | None], None] | None = None) -> TrainResult:
    """Convenience: build items from images+masks and train (see :class:`LoraTrainer`)."""
    cfg = config if isinstance(config, LoraTrainConfig) else load_config(config)
    items = make_items(images, masks, cfg, sources)
    return LoraTrainer(cfg, pipe=pipe).fit(items, resume=resume, progress=progress)
