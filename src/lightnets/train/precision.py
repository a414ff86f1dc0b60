"""Mixed precision: the ``--amp`` modes and the autocast context each one means.

``bf16`` autocasts to bfloat16 on the CPU or CUDA; ``fp16`` autocasts to float16 on CUDA (with a
gradient scaler in training, Micikevicius et al., 2018, *Mixed Precision Training*, Section 3.2);
``none`` runs in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

#: ``--amp`` mode -> autocast dtype (None: no autocast).
AMP_DTYPES: dict[str, torch.dtype | None] = {
    "none": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
AMP_MODES = tuple(AMP_DTYPES)


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``amp`` on ``device`` (a no-op for ``"none"``)."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
