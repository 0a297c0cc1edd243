"""``lora-memory add``: add a turn, a text document or a JSONL file of them to the buffer."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError, LoraMemoryError
from ...store.records import check_text
from .._common import EXIT_OK, Parents, Subparsers, emit, open_store, progress_bar, read_lines

JSONL_LINE_FACTOR = 6
"""A JSONL line may hold this many characters per document character (JSON's \\uXXXX escapes)."""


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "add",
        parents=parents.on_ns,
        help="add a turn (--text), a document (--file) or a JSONL file",
    )
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="T", help="one conversation turn")
    src.add_argument("--file", metavar="F", help="a UTF-8 text document (chunked)")
    src.add_argument(
        "--jsonl",
        metavar="F",
        help="one JSON object per line: {'content', 'role', 'session_id'} for a "
        "turn or {'text', 'source'} for a document; '-' reads stdin",
    )
    sp.add_argument(
        "--role",
        default="user",
        choices=["user", "assistant", "system", "tool"],
        help="role of a --text turn (default: user)",
    )
    sp.add_argument("--session", default=None, metavar="ID", help="session id")
    sp.add_argument("--source", default=None, help="source label of a --file document")
    sp.set_defaults(func=cmd_add)


def cmd_add(args: argparse.Namespace) -> int:
    mem = open_store(args, create=True)
    ns = args.namespace
    ids: list[str] = []
    if args.text is not None:
        ids.append(mem.add_turn(ns, args.text, role=args.role, session_id=args.session))
    elif args.file is not None:
        ids.extend(_add_file(mem, args))
    else:
        ids.extend(_add_jsonl(mem, args))
    unique = len(set(ids))
    emit(
        args,
        {"namespace": ns, "ids": ids, "records": len(ids), "unique": unique},
        lambda: print(f"added {len(ids)} record(s) to {ns!r} ({unique} unique)"),
    )
    return EXIT_OK


def _add_file(mem: Any, args: argparse.Namespace) -> list[str]:
    limit = mem.config.buffer.max_document_chars
    try:  # at most one character past the limit: a huge file is refused, not loaded
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read(limit + 1)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: NUL in the path
        raise InvalidInputError(f"cannot read {args.file!r} as UTF-8 text: {e}") from e
    if len(text) > limit:
        raise InvalidInputError(
            f"{args.file!r} is over buffer.max_document_chars ({limit:,} characters): "
            "split it into several documents, or raise the limit in lora-memory.toml"
        )
    ids: list[str] = mem.add_document(
        args.namespace, text, source=args.source or Path(args.file).name, session_id=args.session
    )
    return ids


def _add_jsonl(mem: Any, args: argparse.Namespace) -> list[str]:
    # Validate the whole file before writing anything: a bad line 900 must not leave
    # 899 records imported.
    ns = args.namespace
    turns: list[dict[str, Any]] = []
    docs: list[dict[str, Any]] = []
    line_limit = JSONL_LINE_FACTOR * mem.config.buffer.max_document_chars + (1 << 20)
    for lineno, obj in _read_jsonl(args.jsonl, line_limit):
        if "content" in obj:
            turns.append(obj)
        elif "text" in obj:
            try:
                check_text(obj["text"], what="text", limit=mem.config.buffer.max_document_chars)
            except LoraMemoryError as e:
                raise InvalidInputError(f"{args.jsonl}:{lineno}: {e}") from e
            docs.append(obj)
        else:
            raise InvalidInputError(
                f"{args.jsonl}:{lineno}: each line needs 'content' (a turn) or 'text' (a document)"
            )
    bar = progress_bar(len(turns) + len(docs), "adding", sys.stderr.isatty() and not args.json)
    ids: list[str] = list(mem.add_turns(ns, turns, progress=bar.update))
    for d in docs:
        ids.extend(
            mem.add_document(
                ns,
                d["text"],
                source=d.get("source"),
                session_id=d.get("session_id"),
                metadata=d.get("metadata"),
            )
        )
        bar.update(1)
    bar.close()
    return ids


def _read_jsonl(path: str, limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line; a line over ``limit`` characters is refused
    once that many are read (a file without newlines is not loaded whole)."""
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except (OSError, ValueError) as e:  # missing, a directory, unreadable, NUL in the path
        raise InvalidInputError(f"cannot open {path!r} as a JSONL file: {e}") from e
    try:
        for lineno, line in enumerate(read_lines(fh, path, limit), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise InvalidInputError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, obj
    finally:
        if fh is not sys.stdin:
            fh.close()
