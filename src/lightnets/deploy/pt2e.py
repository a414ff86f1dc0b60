"""int8 post-training quantization in PyTorch 2 export form (PT2E), for ExecuTorch and LiteRT.

Static quantization (Jacob et al., 2018, Section 2: int8 weights, int8 activations whose ranges
are fixed by calibration images) done the way both device runtimes take it: the network is
captured with ``torch.export`` (batch axis dynamic, so calibration runs whole batches), the
backend's own quantizer annotates it (ExecuTorch's ``XNNPACKQuantizer``, litert-torch's
``PT2EQuantizer``), torchao's ``prepare_pt2e`` inserts observers, the calibration images run
through, and ``convert_pt2e`` leaves quantize/dequantize pairs that the backend's lowering turns
into int8 kernels. Weights are symmetric **per-channel**: one scale per output channel keeps the
depthwise filters of MobileNets, whose ranges differ widely, accurate (MobileNet V2 on ImageNet:
per-tensor post-training quantization 56.7% top-1, per-channel 67.3%, fp32 71.9%).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.deploy.toolchains import quiet, require_mobile
from lightnets.errors import InvalidArgumentError
from lightnets.train.qat import backend_quantizer

__all__ = ["executorch_quantizer", "litert_quantizer", "quantize_pt2e"]


def executorch_quantizer(*, per_channel: bool = True) -> Any:
    """ExecuTorch's XNNPACK quantizer: symmetric int8 weights (per channel, or per tensor),
    asymmetric per-tensor int8 activations."""
    require_mobile("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")  # quietly
    return backend_quantizer("executorch", per_channel=per_channel)


def litert_quantizer(*, per_channel: bool = True) -> Any:
    """litert-torch's PT2E quantizer: the same scheme as ExecuTorch's."""
    require_mobile("litert_torch.quantize.pt2e_quantizer")
    return backend_quantizer("litert", per_channel=per_channel)


def quantize_pt2e(
    model: nn.Module,
    quantizer: Any,
    calibration: Iterable[torch.Tensor | np.ndarray],
    input_size: tuple[int, int, int],
    *,
    fold_quantize: bool = True,
) -> nn.Module:
    """``model`` (eval mode, BatchNorm folded) quantized by ``quantizer``, calibrated on batches.

    Returns the converted graph module in eval mode: it computes what the int8 runtime will
    (up to the runtime's rounding) and is what the backend's exporter lowers. ``fold_quantize``
    False keeps the weights' quantize ops in the graph (litert-torch needs them).
    """
    pt2e = require_mobile("torchao.quantization.pt2e.quantize_pt2e")
    export_utils = require_mobile("torchao.quantization.pt2e")
    batches = [torch.as_tensor(np.asarray(b, dtype=np.float32)) for b in calibration]
    if not batches:
        raise InvalidArgumentError("quantization needs at least one calibration image")
    example = torch.zeros(2, *input_size)  # batch 2: a batch of 1 would be specialised
    with quiet():
        captured = torch.export.export(
            model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
        ).module()
        prepared = pt2e.prepare_pt2e(captured, quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        converted = pt2e.convert_pt2e(prepared, fold_quantize=fold_quantize)
        export_utils.move_exported_model_to_eval(converted)
    return converted
