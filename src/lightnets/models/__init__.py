"""The model zoo: SqueezeNet, MobileNet V1/V2, ShuffleNet V1/V2."""

from lightnets.models.base import LightweightNet
from lightnets.models.registry import (
    HParam,
    create_model,
    get_model_entry,
    list_models,
    register_model,
)

__all__ = [
    "HParam",
    "LightweightNet",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
