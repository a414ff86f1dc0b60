"""Exponential moving average of a model's weights (Polyak averaging).

``ema = decay * ema + (1 - decay) * weights`` after every optimiser step, for parameters and
floating-point buffers (BatchNorm running statistics); integer buffers are copied. This is the
update of ``torch.optim.swa_utils.get_ema_multi_avg_fn``; the averaged copy has the same
state-dict keys as the model, so a checkpoint's ``"ema"`` entry loads into a fresh model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma(nn.Module):
    """An averaged copy of ``model`` (kept in eval mode, never trained directly)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_state = self.module.state_dict()
        floats_ema, floats_model = [], []
        for key, value in model.state_dict().items():
            target = ema_state[key]
            if target.is_floating_point():
                floats_ema.append(target)
                floats_model.append(value.detach())
            else:
                target.copy_(value)
        for target, value in zip(floats_ema, floats_model, strict=True):
            target.lerp_(value, 1.0 - self.decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
