"""The subcommands, one module each (``ask`` holds ask and ask-many), in ``--help`` order."""

from __future__ import annotations

from collections.abc import Callable

from .._common import Parents, Subparsers
from . import (
    add,
    ask,
    bench,
    calibrate,
    consolidate,
    forget,
    init,
    mcp,
    models,
    modules,
    search,
    serve,
    status,
)

REGISTER: tuple[Callable[[Subparsers, Parents], None], ...] = (
    init.register,
    add.register,
    search.register,
    ask.register,
    consolidate.register,
    calibrate.register,
    forget.register,
    modules.register,
    status.register,
    serve.register,
    mcp.register,
    bench.register,
    models.register,
)
"""Each adds its command's parser (with its options and ``func``) to the subparsers."""
