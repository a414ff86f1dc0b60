"""Runtimes must not change Python's logging for the rest of the process.

A failed OpenVINO conversion used to leave the root logger at ERROR (``convert_model`` restores
it only on success), so every later warning of the process was dropped: in one pytest process,
the tests that look for the "classifier freshly initialised" note then failed.
"""

from __future__ import annotations

import logging

import pytest
import torch

import lightnets
from lightnets.deploy.exporters import openvino_model
from lightnets.logging_state import kept_logging
from test_weights_formats import random_state, save, torchvision_mobilenet_v2


def _state(logger: logging.Logger) -> tuple:
    handlers = [(h, h.level) for h in logger.handlers]
    return (
        logger.level,
        handlers,
        list(logger.filters),
        logger.propagate,
        logging.root.manager.disable,
    )


@pytest.fixture
def own_root_handler():
    """A handler and a level of our own on the root logger, so "as before" is not the default."""
    root = logging.getLogger()
    handler, level = logging.NullHandler(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_kept_logging_undoes_everything_a_call_changes(own_root_handler):
    root, nncf = logging.getLogger(), logging.getLogger("nncf")
    before, before_nncf = _state(root), _state(nncf)
    with pytest.raises(RuntimeError), kept_logging("nncf", root_level=logging.ERROR):
        assert root.level == logging.ERROR
        for handler in root.handlers:
            handler.setLevel(logging.ERROR)
        root.removeHandler(own_root_handler)
        root.addHandler(logging.StreamHandler())
        root.addFilter(lambda record: False)
        nncf.setLevel(logging.CRITICAL)
        logging.disable(logging.WARNING)
        raise RuntimeError("the call failed")
    assert _state(root) == before and _state(nncf) == before_nncf


def test_a_failed_openvino_conversion_leaves_logging_as_it_was(own_root_handler, tmp_path, caplog):
    pytest.importorskip("openvino")
    before = _state(logging.getLogger())
    with pytest.raises(Exception, match="channels"):  # 5 channels into a 3-channel convolution
        openvino_model(torch.nn.Conv2d(3, 4, 1), torch.zeros(1, 5, 8, 8))
    assert _state(logging.getLogger()) == before
    # The note of a later weights load still reaches the handlers (and the load report).
    path = tmp_path / "mobilenet_v2.pth"
    save(random_state(torchvision_mobilenet_v2(0.5)), path)
    model = lightnets.create_model("mobilenet_v2", weights=path, num_classes=10)
    note = "classifier freshly initialised for 10 classes"
    assert any(note in n for n in model.weights_report.notes)
    assert any(note in r.getMessage() for r in caplog.records)


def test_quiet_silences_a_library_logger_with_its_own_stream_for_the_block_only():
    """PyTorch's loggers (``torch.onnx``: "torchvision is not installed. Skipping ...";
    ``torch.utils._pytree``: torchao's register_constant() notice) write through their own
    handler to the stderr of their creation and do not propagate: only their level hides them."""
    import io

    stream = io.StringIO()
    library = logging.getLogger("lightnets_test_library")
    handler = logging.StreamHandler(stream)
    library.addHandler(handler)
    library.propagate = False
    child = logging.getLogger("lightnets_test_library.exporter._registration")
    try:
        before = _state(library)
        with kept_logging(quiet=("lightnets_test_library",)):
            child.warning("torchvision is not installed. Skipping torchvision::nms")
        assert stream.getvalue() == ""
        assert _state(library) == before
        child.warning("after the block")
        assert stream.getvalue() == "after the block\n"
    finally:
        library.removeHandler(handler)
        library.propagate = True
