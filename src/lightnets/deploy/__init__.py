"""Fast inference: BN folding, export, quantization, benchmarking, prediction.

``fuse`` folds BatchNorm into convolutions; ``export`` writes verified ONNX, TorchScript or
OpenVINO files; ``quantize`` makes a calibrated int8 model; ``benchmark`` checks and times the
inference backends (``BACKENDS``); ``predict`` classifies image files.
"""

from lightnets.deploy.backends import BACKENDS, Backend, get_backend
from lightnets.deploy.bench import BenchRecord, benchmark
from lightnets.deploy.exporters import FORMATS, ExportResult, export
from lightnets.deploy.fusion import count_batchnorm, fuse
from lightnets.deploy.prediction import Prediction, predict
from lightnets.deploy.quantization import QuantizationReport, quantize

__all__ = [
    "BACKENDS",
    "FORMATS",
    "Backend",
    "BenchRecord",
    "ExportResult",
    "Prediction",
    "QuantizationReport",
    "benchmark",
    "count_batchnorm",
    "export",
    "fuse",
    "get_backend",
    "predict",
    "quantize",
]
