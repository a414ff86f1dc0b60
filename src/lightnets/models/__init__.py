"""The model zoo: SqueezeNet, MobileNet V1/V2, ShuffleNet V1/V2.

Importing this package imports every family module, whose ``register_model`` call fills the
registry (imports go one way: families -> registry -> base; ``weights`` -> registry; and
:func:`create_model`, which may load weights, above both in :mod:`.factory`).
"""

from lightnets.models import (  # noqa: F401  (imported to register the families)
    mobilenet_v1,
    mobilenet_v2,
    shufflenet_v1,
    shufflenet_v2,
    squeezenet,
)
from lightnets.models.base import LightweightNet
from lightnets.models.factory import create_model
from lightnets.models.registry import HParam, get_model_entry, list_models, register_model

__all__ = [
    "HParam",
    "LightweightNet",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
