"""Inception-v3 pool features from a **local** weights file, for FID and Inception-KID.

:func:`inception_embedder` builds torchvision's ``inception_v3`` (``weights=None``,
``init_weights=False``: nothing is downloaded, torchvision's weight enums are never asked
for a state dict) and loads a state dict the user already has on disk, then embeds crops as
the 2048-d average-pooled output of ``Mixed_7c`` (the "pool3" features FID is defined on).

Accepted files (read with ``torch.load(weights_only=True)``, so no code in the file runs):

- torchvision's ``inception_v3_google-*.pth`` (a plain state dict with ``AuxLogits.*`` and a
  1000-class ``fc``);
- a checkpoint dict holding it under ``"state_dict"``; a ``module.`` prefix (DataParallel)
  is stripped;
- any torchvision-compatible Inception-v3 state dict, e.g. the TF-FID weights converted to
  torchvision key names (its 1008-class ``fc`` is fine). ``AuxLogits.*`` and ``fc.*`` are
  not needed for features and are ignored; every other key must be present with the right
  shape, else an :class:`InputError` names a few missing / unexpected / mis-shaped keys.

**Comparability.** torchvision's ImageNet Inception weights are *not* the TF-FID Inception
(``pt_inception-2015-12-05``) used by the reference FID implementations (TTUR, pytorch-fid,
clean-fid, torchmetrics), so FID/KID values from them are comparable across our own runs but
not to published FID numbers. Even the TF-FID weights, converted to torchvision's layout,
run here through torchvision's blocks, whose pooling details and input resize differ
slightly from the TF graph, so those values are close to but not the reference either.

Preprocessing: RGB uint8 crops -> float [0, 1] -> bilinear resize (antialiased) to
299 x 299 -> ImageNet mean/std normalisation; the model has ``transform_input=True``, as
torchvision sets for these weights, so the network sees ``2 x - 1`` (the scaling both the
torchvision and the TF-FID weights were trained with). Batched, under
``torch.inference_mode``; the same inputs, batch size and thread count give bit-identical
features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectforge.errors import InputError

INPUT_SIZE = 299
FEATURE_DIM = 2048
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_UNUSED_PREFIXES = ("AuxLogits.", "fc.")  # heads: not needed for pool features


def _few(keys: Sequence[str], n: int = 4) -> str:
    """The first ``n`` keys (model order for missing keys, file order for the rest)."""
    keys = list(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_inception_state_dict(path: str | Path) -> dict[str, Any]:
    """Read an Inception-v3 state dict from ``path`` (see the module docstring for the
    accepted layouts); returns ``{key: tensor}`` with ``module.`` stripped."""
    import torch

    p = Path(path)
    if not p.exists():
        raise InputError(p, "Inception weights file not found")
    if not p.is_file():
        raise InputError(p, "Inception weights must be a file (a torch state dict .pth), not a folder")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle means: not a (safe) torch weights file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(p, f"not a readable torch weights file ({exc.__class__.__name__}"
                            f"{': ' + first[:120] if first else ''})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise InputError(p, f"not a state dict (got {type(obj).__name__}{' (empty)' if isinstance(obj, dict) else ''}); "
                            "expected {parameter name: tensor}, e.g. torchvision's inception_v3_google-*.pth")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(p, f"not a state dict: entries that are not named tensors: {_few(bad)}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def build_inception(state_dict: dict[str, Any], where: str | Path | None = None):
    """torchvision Inception-v3 with ``state_dict`` loaded, heads removed (``fc`` is the
    identity), in eval mode: ``(N, 3, 299, 299)`` ImageNet-normalised -> ``(N, 2048)``."""
    import torch
    from torchvision.models import inception_v3

    model = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    model.fc = torch.nn.Identity()
    want = model.state_dict()
    given = {k: v for k, v in state_dict.items() if not k.startswith(_UNUSED_PREFIXES)}
    optional = {k for k in want if k.endswith("num_batches_tracked")}  # absent from the 2017 google file
    missing = [k for k in want if k not in given and k not in optional]
    unexpected = [k for k in given if k not in want]
    shape = [f"{k} {tuple(given[k].shape)} (model {tuple(want[k].shape)})"
             for k in want if k in given and tuple(given[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {_few(unexpected)}")
        if shape:
            parts.append(f"{len(shape)} keys of the wrong shape, e.g. {_few(shape, 2)}")
        raise InputError(where, "the weights do not fit torchvision's Inception-v3: " + "; ".join(parts))
    model.load_state_dict(given, strict=False)
    return model.eval()


class InceptionEmbedder:
    """2048-d Inception-v3 pool features of RGB uint8 crops (an :class:`~defectforge.filter.embed.Embedder`).

    Features are **not** L2-normalised (FID and KID are defined on the raw pool features).
    """

    def __init__(self, model: Any, batch_size: int = 16, size: int = INPUT_SIZE, device: str = "cpu"):
        self.model = model.to(device) if hasattr(model, "to") else model
        self.batch_size, self.size, self.device = int(batch_size), int(size), str(device)
        if self.batch_size < 1:
            from defectforge.errors import ConfigError

            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")

    def _batch(self, images: Sequence[np.ndarray]):
        import torch
        import torch.nn.functional as F

        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        out = []
        for im in images:
            a = np.asarray(im)
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=2)
            if a.ndim != 3 or a.shape[2] < 3 or a.dtype != np.uint8:
                raise InputError(None, f"Inception features need RGB uint8 crops, got shape {a.shape} dtype {a.dtype}")
            t = torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)[None].float().div_(255.0)
            out.append(F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                     antialias=True))
        return (torch.cat(out).clamp_(0.0, 1.0) - mean) / std

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 2048)`` float64 features (``(0, 2048)`` for no images)."""
        import torch

        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM), np.float64)
        self.model.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                f = self.model(self._batch(images[s:s + self.batch_size]).to(self.device))
                out.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
        return np.concatenate(out)


def inception_embedder(weights: str | Path, batch_size: int = 16, device: str = "cpu") -> InceptionEmbedder:
    """An :class:`InceptionEmbedder` from a local Inception-v3 weights file (never downloads).

    Raises :class:`InputError` naming the file when it is missing, is not a state dict, or
    its keys do not fit torchvision's Inception-v3 (a few missing / unexpected keys named).
    """
    sd = load_inception_state_dict(weights)
    return InceptionEmbedder(build_inception(sd, weights), batch_size=batch_size, device=device)
