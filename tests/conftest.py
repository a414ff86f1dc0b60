"""Shared test helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import lightnets


def _count_macs(name: str, size: int = 224, **kwargs) -> float:
    """Multiply-accumulates of one image (FlopCounterMode's FLOPs / 2), on the meta device."""
    with torch.device("meta"):
        model = lightnets.create_model(name, **kwargs).eval()
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


@pytest.fixture
def count_macs() -> Callable[..., float]:
    """``count_macs(name, size=224, **create_model_kwargs)`` -> MACs of one image."""
    return _count_macs
