"""The model zoo: SqueezeNet, MobileNet V1/V2, ShuffleNet V1/V2.

Importing this package imports every family module, whose ``register_model`` call fills the
registry with the family's builder, hyperparameters and facts (imports go one way: families ->
registry -> base; ``weights`` -> registry; and :func:`create_model`, which may load weights,
above both in :mod:`.factory`). The order of the imports below is the zoo's order:
``lightnets compare`` lists the families in it, and figures' legends show them in it.
"""

# isort: off
from lightnets.models import squeezenet  # noqa: F401  (imported to register the family)
from lightnets.models import mobilenet_v1  # noqa: F401
from lightnets.models import mobilenet_v2  # noqa: F401
from lightnets.models import shufflenet_v1  # noqa: F401
from lightnets.models import shufflenet_v2  # noqa: F401

# isort: on
from lightnets.models.base import LightweightNet
from lightnets.models.factory import create_model
from lightnets.models.facts import PaperFigure, PlotStyle
from lightnets.models.registry import (
    HParam,
    ModelEntry,
    get_model_entry,
    list_models,
    model_entries,
    register_model,
    unregister_model,
)

__all__ = [
    "HParam",
    "LightweightNet",
    "ModelEntry",
    "PaperFigure",
    "PlotStyle",
    "create_model",
    "get_model_entry",
    "list_models",
    "model_entries",
    "register_model",
    "unregister_model",
]
