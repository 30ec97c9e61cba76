"""Request bodies as JSON objects: one parser, so every route refuses bad JSON the same way
(a 400 problem, also for input nested deep enough to exhaust the parser's recursion)."""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InvalidRequest

__all__ = ["bounded_int", "json_object", "unix_time"]


def json_object(data: bytes, what: str = "body") -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{what} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return obj


def bounded_int(value: object, what: str, low: int = 0, high: int = 2**63 - 1) -> int:
    """An integer within what SQLite stores (the default bounds)."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"{what} must be an integer within {low}..{high}")
    return value


def unix_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{what} must be a unix time")
    if not math.isfinite(value) or not 0 <= value < 2**40:
        raise InvalidRequest(f"{what} must be a unix time")
    return float(value)
