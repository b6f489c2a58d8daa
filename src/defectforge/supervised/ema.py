"""Exponential moving average of a detector's weights during training (opt-in, ``TrainConfig.ema``).

As in ultralytics' ``ModelEMA`` and torchvision's reference scripts (``--model-ema``), validation,
the best-epoch choice and the saved model use the averaged weights, while the optimiser keeps
stepping the raw ones. The averaged weights move less from one step to the next, so the epoch
picked on a small validation split depends less on where the last steps happened to land.

The decay ramps up as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``:
``min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so a short run averages over its
recent steps (about 65 at step 600) rather than keeping its random initial weights.
Only what training changes is averaged: parameters that require a gradient and floating-point
buffers (batch-norm statistics); the state is saved in every checkpoint, so a resumed run
ends with the same averaged weights as an uninterrupted one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


class WeightEMA:
    """``WeightEMA(model, decay)``; :meth:`update` after every optimiser step, :meth:`applied`
    to evaluate or save with the averaged weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        trained |= {n for n, b in model.named_buffers() if b.dtype.is_floating_point}
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in trained}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        live = model.state_dict()
        for k, avg in self.state.items():
            avg.mul_(d).add_(live[k].detach(), alpha=1.0 - d)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after it."""
        live = model.state_dict()
        saved = {k: live[k].detach().clone() for k in self.state}
        with torch.no_grad():
            for k, avg in self.state.items():
                live[k].copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    live[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "state": {k: v.detach().cpu() for k, v in self.state.items()}}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if set(st["state"]) != set(self.state):
            raise KeyError("the checkpoint's averaged weights do not fit the detector")
        self.decay, self.updates = float(st["decay"]), int(st["updates"])
        for k, v in st["state"].items():
            self.state[k].copy_(v)
