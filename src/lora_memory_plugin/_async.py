"""``async_twin``: the async form of a blocking method, run in a worker thread."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def async_twin(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """``await twin(...)`` runs ``fn(...)`` with :func:`asyncio.to_thread`, same signature."""

    @functools.wraps(fn)
    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(fn, *args, **kwargs)

    twin.__doc__ = f"Async twin of :meth:`{fn.__name__}` (runs it in a worker thread)."
    return twin
