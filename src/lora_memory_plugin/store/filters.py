"""Search filters -> a Chroma ``where`` clause."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .._validate import finite_seconds
from ..errors import InvalidInputError, InvalidTypeError
from .records import KINDS

TimeLike = float | int | dt.datetime | None


def _to_epoch(value: TimeLike, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidTypeError(f"{what} must be a datetime or epoch seconds, got bool")
    if isinstance(value, dt.datetime):
        try:
            if value.tzinfo is None:
                value = value.astimezone()  # naive = local time, as datetime.now() gives
            return value.timestamp()
        except (OverflowError, ValueError, OSError) as e:  # e.g. year 1 or 9999 near the edge
            raise InvalidInputError(f"{what} {value!r} cannot be used as a time: {e}") from e
    if isinstance(value, (int, float)):
        return finite_seconds(value, what)
    raise InvalidTypeError(
        f"{what} must be a datetime or epoch seconds, got {type(value).__name__}"
    )


def build_where(
    *,
    kind: str | None = None,
    session_id: str | None = None,
    role: str | None = None,
    status: str | None = None,
    since: TimeLike = None,
    until: TimeLike = None,
    where: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Combine the convenience filters and a raw Chroma ``where`` with ``$and``.

    Example:
        >>> build_where(kind="turn", since=0)
        {'$and': [{'kind': 'turn'}, {'created_at': {'$gte': 0.0}}]}
    """
    clauses: list[dict[str, Any]] = []
    if kind is not None:
        if kind not in KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        clauses.append({"kind": kind})
    for key, value in (("session_id", session_id), ("role", role), ("status", status)):
        if value is not None:
            if not isinstance(value, str):
                raise InvalidTypeError(f"{key} must be a str, got {type(value).__name__}")
            clauses.append({key: value})
    lo, hi = _to_epoch(since, "since"), _to_epoch(until, "until")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInputError(f"since ({lo}) is after until ({hi}); swap them")
    if lo is not None:
        clauses.append({"created_at": {"$gte": lo}})
    if hi is not None:
        clauses.append({"created_at": {"$lte": hi}})
    if where:
        if not isinstance(where, dict):
            raise InvalidTypeError(f"where must be a dict, got {type(where).__name__}")
        clauses.append(where)
    if not clauses:
        return None
    if len(clauses) == 1:
        return clauses[0]
    return {"$and": clauses}
