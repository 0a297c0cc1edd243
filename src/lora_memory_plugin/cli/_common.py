"""What the subcommands share: exit codes, output, opening the store and the common options."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3

Subparsers = argparse._SubParsersAction
"""What ``ArgumentParser.add_subparsers`` returns: each command module adds its parser to it."""


@dataclass(frozen=True)
class Parents:
    """The options several commands share, declared once (argparse parents)."""

    as_json: argparse.ArgumentParser
    store: argparse.ArgumentParser
    on_ns: list[argparse.ArgumentParser]
    """The store, one namespace (``-n NS``, required) and ``--json``."""


def shared_parents() -> Parents:
    """Fresh parents for one parser (argparse shares their actions with the parsers using them)."""
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("dir", metavar="DIR", help="the store directory")
    store.add_argument(
        "--chroma-url",
        default=None,
        metavar="URL",
        help="use this Chroma server instead of the store's configured one",
    )
    one_ns = argparse.ArgumentParser(add_help=False)
    one_ns.add_argument(
        "-n",
        "--namespace",
        required=True,
        metavar="NS",
        help="namespace (any string, e.g. a user id)",
    )
    return Parents(as_json=as_json, store=store, on_ns=[store, one_ns, as_json])


def emit(args: argparse.Namespace, payload: dict[str, Any], human: Callable[[], None]) -> None:
    """``payload`` as one JSON line on stdout under ``--json``, else ``human()``."""
    if args.json:
        print(json.dumps(payload, ensure_ascii=False, default=str))
    else:
        human()


def fail(args: argparse.Namespace, e: Exception, code: int) -> None:
    """Report ``e``: a JSON error object on stdout under ``--json``, and a line on stderr."""
    if getattr(args, "json", False):
        print(json.dumps({"error": type(e).__name__, "message": str(e), "exit_code": code}))
    print(f"lora-memory: error: {e}", file=sys.stderr)


def store_dir(args: argparse.Namespace) -> str:
    d = str(args.dir)
    if not d or "\0" in d:
        raise InvalidInputError(f"DIR must be a directory path without NUL bytes, got {d!r}")
    return d


def open_store(args: argparse.Namespace, create: bool = False) -> Any:
    # imported here, not at the top: the facade pulls in torch and chromadb, and --help
    # should stay fast
    from ..memory import LoRAMemory  # noqa: PLC0415

    return LoRAMemory.open(
        store_dir(args), chroma_url=getattr(args, "chroma_url", None), create=create
    )


def progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm  # noqa: PLC0415 (tqdm on first use)

    return tqdm(total=total, desc=desc, unit="rec", disable=not enabled, file=sys.stderr)


def pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def read_lines(fh: Any, path: str, limit: int) -> Iterator[str]:
    """The lines of ``fh``, each read at most ``limit`` characters (and its newline) far."""
    lineno = 0
    try:
        while line := fh.readline(limit + 2):
            lineno += 1
            if len(line.rstrip("\r\n")) > limit:
                raise InvalidInputError(
                    f"{path}:{lineno}: line is over {limit:,} characters; split the input"
                )
            yield line
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"cannot read {path!r} as UTF-8 text: {e}") from e
