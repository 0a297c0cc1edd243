"""Checks on what callers pass, shared by the facade and the layers that take caller values."""

from __future__ import annotations

import math
import time

from .errors import InvalidInputError, InvalidTypeError

MAX_QUERY_CHARS = 8192
MAX_K = 1000


def check_k(k: object, what: str = "k") -> int:
    """An int in ``[1, MAX_K]``."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidTypeError(f"{what} must be an int, got {type(k).__name__}")
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"{what} must be between 1 and {MAX_K}, got {k}")
    return k


def check_ids(ids: object) -> list[str]:
    """A list (or tuple) of str record ids."""
    if (
        isinstance(ids, str)
        or not isinstance(ids, (list, tuple))
        or not all(isinstance(i, str) for i in ids)
    ):
        raise InvalidTypeError("ids must be a list of str record ids")
    return list(ids)


def check_time(created_at: object) -> float:
    """Finite epoch seconds; None is now."""
    if created_at is None:
        return time.time()
    if isinstance(created_at, bool) or not isinstance(created_at, (int, float)):
        raise InvalidTypeError(
            f"created_at must be epoch seconds (float), got {type(created_at).__name__}"
        )
    return finite_seconds(created_at, "created_at")


def finite_seconds(value: float, what: str) -> float:
    """``value`` as float epoch seconds; an infinite, NaN or overflowing one is refused."""
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise InvalidInputError(f"{what} must be finite epoch seconds, got {value!r:.40}")
    return out


__all__ = ["MAX_K", "MAX_QUERY_CHARS", "check_k", "check_time", "finite_seconds"]
