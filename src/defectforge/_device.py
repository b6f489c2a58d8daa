"""The one reading of ``--device`` (and ``device=``) everywhere a model runs."""

from __future__ import annotations

from defectforge.errors import ConfigError


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other values are checked and returned."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    if str(device) not in ("cpu", "mps") and not str(device).startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if str(device).startswith("cuda:"):
        index = str(device)[5:]
        if not index.isdigit():
            raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but torch sees {torch.cuda.device_count()} CUDA "
                              f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return str(device)
