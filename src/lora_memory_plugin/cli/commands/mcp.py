"""``lora-memory mcp``: the store's memory as MCP tools over stdio (for a local agent)."""

from __future__ import annotations

import argparse

from ...errors import MissingExtraError
from .._common import EXIT_OK, Parents, Subparsers, open_store


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "mcp",
        parents=[parents.store],
        help="serve the store to an MCP client over stdio (remember, search, ask, ...)",
        description=(
            "Model Context Protocol over stdin/stdout, for an agent that starts this command "
            "(e.g. an MCP client's config: command 'lora-memory', args ['mcp', DIR]). Tools: "
            "remember, search, recall, ask, forget, on every namespace of the store. Only "
            "protocol messages go to stdout; logs go to stderr."
        ),
    )
    sp.set_defaults(func=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        from ...service.mcp import run_stdio  # noqa: PLC0415 (the serve extra)
    except ImportError as e:
        raise MissingExtraError(
            f"lora-memory mcp needs the serve extra: pip install 'lora-memory-plugin[serve]' ({e})"
        ) from e
    mem = open_store(args)
    run_stdio(mem)
    return EXIT_OK
