"""OpenVINO's small alternate signal stack must not crash later child-process exits.

Seen in the full test suite: after an OpenVINO compile, a DataLoader worker's exit (SIGCHLD, whose
Python handler runs on the alternate stack) killed pytest with SIGSEGV. Before the fix the stack
is OpenVINO's 11,568 bytes, and this test fails.
"""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("openvino")

from lightnets.deploy.openvino_runtime import (
    MIN_SIGNAL_STACK_BYTES,
    compile_model,
    signal_stack_size,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack: Linux")


def test_compile_leaves_a_large_signal_stack():
    import openvino as ov

    ov_model = ov.convert_model(torch.nn.Conv2d(3, 4, 3), example_input=torch.randn(1, 3, 8, 8))
    compiled = compile_model(ov_model)
    assert compiled(torch.randn(1, 3, 8, 8).numpy())[0].shape == (1, 4, 6, 6)
    size = signal_stack_size()
    assert size is None or size >= MIN_SIGNAL_STACK_BYTES
