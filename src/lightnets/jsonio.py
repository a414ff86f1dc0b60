"""Strict JSON for every file and every ``--json`` output lightnets writes.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which are not JSON: parsers in
other languages (JavaScript's ``JSON.parse``, Go, jq) reject the whole document. Non-finite
floats become ``null`` here, and ``allow_nan=False`` makes any that slip through an error
instead of invalid output.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf), however deeply nested, as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always produces valid JSON (non-finite floats written as null)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
