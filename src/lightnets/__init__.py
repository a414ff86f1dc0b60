"""lightnets: lightweight CNNs built to their papers, measured, trained and deployed."""

from typing import Any

from lightnets.errors import LightnetsError
from lightnets.models import create_model, get_model_entry, list_models
from lightnets.version import __version__

__all__ = [
    "LightnetsError",
    "__version__",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_weights",
    "profile",
]


def __getattr__(name: str) -> Any:
    # Lazy, so `import lightnets` stays light and analysis can import models freely.
    if name == "profile":
        from lightnets.analysis import profile

        return profile
    if name == "load_weights":
        from lightnets.models.weights import load_weights

        return load_weights
    raise AttributeError(f"module 'lightnets' has no attribute {name!r}")
