"""Pretrained weights: lightnets checkpoints and safetensors, torchvision and timm state dicts.

Files are recognised by their content (:mod:`.files`), their tensors by the layout's names
(:mod:`.layouts`: one table per reference library), and loaded tensor for tensor with one-line
errors naming the first tensor that does not fit (:mod:`.loading`).
"""

from lightnets.models.weights.files import WeightsFile, read_weights_file, write_weights_file
from lightnets.models.weights.layouts import LAYOUTS, Source, identify, key_map
from lightnets.models.weights.loading import (
    LoadReport,
    create_pretrained,
    export_state_dict,
    load_weights,
    model_from_file,
    save_weights,
    source_of,
    weights_state,
)

__all__ = [
    "LAYOUTS",
    "LoadReport",
    "Source",
    "WeightsFile",
    "create_pretrained",
    "export_state_dict",
    "identify",
    "key_map",
    "load_weights",
    "model_from_file",
    "read_weights_file",
    "save_weights",
    "source_of",
    "weights_state",
    "write_weights_file",
]
