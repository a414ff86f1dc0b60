"""lightnets: lightweight CNNs built to their papers, measured, trained and deployed.

Every public name but the error class and the version is imported on first use (PEP 562), so
that ``import lightnets`` (and ``lightnets --help``) does not pay for importing PyTorch.
"""

from typing import Any

from lightnets.errors import LightnetsError
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

#: Public name -> the module that defines it, imported when the name is first used.
_LAZY = {
    "create_model": "lightnets.models",
    "get_model_entry": "lightnets.models",
    "list_models": "lightnets.models",
    "profile": "lightnets.analysis",
    "load_weights": "lightnets.models.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightnets' has no attribute {name!r}")
