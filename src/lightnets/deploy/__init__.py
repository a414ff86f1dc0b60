"""Fast inference: BN folding, export, quantization, benchmarking, prediction.

``fuse`` folds BatchNorm into convolutions; ``export`` writes verified ONNX, OpenVINO, pt2,
ExecuTorch (.pte), LiteRT (.tflite), Core ML (.mlpackage) or TorchScript files carrying their
metadata (``read_metadata``); ``quantize`` makes a calibrated int8 model; ``benchmark`` checks
and times the inference backends of a device (``DEVICES``: the CPU's ``BACKENDS``, extended
with ``register_backend``, and CUDA's), one routine for every device;
``predict`` classifies image files; ``open_exported`` runs an exported file in its runtime
(the device formats' recognition, trust rule and loaders are a table:
``device_formats.DEVICE_FORMATS``). Imports go one way: toolchains <- the device runtimes
(pt2, executorch_runtime, litert_runtime, coreml, pt2e) and openvino_runtime <- exporters <-
quantization <- backends <- cuda <- devices <- bench; accuracy, metadata and outputs depend on
none of them (metadata reads the device formats through ``device_formats``, imported when
needed).
"""

from lightnets.deploy.backends import BACKENDS, Backend, get_backend, register_backend
from lightnets.deploy.bench import BenchRecord, Int8Data, benchmark
from lightnets.deploy.devices import DEVICES, BenchDevice
from lightnets.deploy.exported import ExportedModel, open_exported
from lightnets.deploy.exporters import FORMATS, ExportResult, export
from lightnets.deploy.fusion import count_batchnorm, fuse
from lightnets.deploy.metadata import read_metadata
from lightnets.deploy.prediction import Prediction, predict
from lightnets.deploy.quantization import QuantizationReport, quantize

__all__ = [
    "BACKENDS",
    "DEVICES",
    "FORMATS",
    "Backend",
    "BenchDevice",
    "BenchRecord",
    "ExportResult",
    "ExportedModel",
    "Int8Data",
    "Prediction",
    "QuantizationReport",
    "benchmark",
    "count_batchnorm",
    "export",
    "fuse",
    "get_backend",
    "open_exported",
    "predict",
    "quantize",
    "read_metadata",
    "register_backend",
]
