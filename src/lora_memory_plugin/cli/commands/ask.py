"""``lora-memory ask`` and ``ask-many``: answer a question, or each line of a file, from memory."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

from ..._validate import MAX_QUERY_CHARS
from ...errors import InvalidInputError, LoraMemoryError
from ...store.records import check_text
from ...types import MODES
from .._common import EXIT_OK, Parents, Subparsers, emit, open_store, read_lines

ASK_MANY_CHUNK = 256
"""``ask-many`` reads, answers and prints this many questions at a time: memory stays bounded
however long the file is, and answers appear as they are made."""


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser("ask", parents=parents.on_ns, help="answer a question from memory")
    sp.add_argument("question", metavar="QUESTION")
    _answer_options(
        sp,
        mode_help="auto (default): lora, hybrid or rag per question from routing confidence and "
        "the module's measured agreement; hybrid/lora use consolidated modules (rag until there "
        "are any)",
    )
    sp.add_argument(
        "--explain",
        action="store_true",
        help="show the routing decision: candidate modules, key scores, confidence, why",
    )
    sp.set_defaults(func=cmd_ask)

    sp = sub.add_parser(
        "ask-many",
        parents=parents.on_ns,
        help="answer every line of a file, in mixed multi-adapter batches",
        description="Route each question on its own, then generate them in batches where every "
        "row carries its own module (one forward pass for many modules). The file is checked "
        f"first (a line over {MAX_QUERY_CHARS} characters answers nothing), then read, answered "
        f"and printed {ASK_MANY_CHUNK} questions at a time, so any length of file runs in "
        "bounded memory.",
    )
    sp.add_argument("questions", metavar="FILE", help="one question a line")
    _answer_options(sp)
    sp.add_argument("--batch-size", type=int, default=16, help="rows per generate call")
    sp.add_argument("--explain", action="store_true", help="keep each routing decision's keys")
    sp.set_defaults(func=cmd_ask_many)


def _answer_options(sp: argparse.ArgumentParser, mode_help: str | None = None) -> None:
    sp.add_argument("--mode", default="auto", choices=MODES, help=mode_help)
    sp.add_argument("-k", type=int, default=None, help="buffer hits in context (rag/hybrid)")
    sp.add_argument("--max-new-tokens", type=int, default=None)


def cmd_ask(args: argparse.Namespace) -> int:
    mem = open_store(args)
    ans = mem.ask(
        args.namespace, args.question, mode=args.mode, k=args.k, max_new_tokens=args.max_new_tokens
    )

    def human() -> None:
        print(ans.text)
        t = ans.timings
        print(
            f"-- mode {ans.mode} (asked {ans.requested_mode}), {ans.context_tokens} prompt "
            f"tokens, {len(ans.sources)} sources, generate {t.get('generate', 0):.2f}s, "
            f"total {t.get('total', 0):.2f}s",
            file=sys.stderr,
        )
        for n in ans.notes:
            print(f"-- note: {n}", file=sys.stderr)
        if args.explain:
            _print_route(ans)

    emit(args, _answer_dict(ans, args.explain), human)
    return EXIT_OK


def cmd_ask_many(args: argparse.Namespace) -> int:
    """FILE's questions (one a line) answered in chunks of ask_many calls: mixed multi-adapter
    batches. The file is checked whole first (a bad line answers nothing), then read again a
    chunk at a time; ``--json`` prints one object whose ``answers`` array is streamed."""
    path = args.questions

    def questions() -> Iterator[tuple[int, str]]:
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115 -- closed below
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read {path!r}: {e}") from e
        with fh:
            for lineno, line in enumerate(read_lines(fh, path, MAX_QUERY_CHARS), 1):
                if line.strip():
                    yield lineno, line.strip()

    total = 0
    for lineno, q in questions():
        try:
            check_text(q, what="question", limit=MAX_QUERY_CHARS)
        except LoraMemoryError as e:
            raise InvalidInputError(f"{path}:{lineno}: {e}") from e
        total += 1
    if not total:
        raise InvalidInputError(f"{path!r} holds no question (one a line)")
    mem = open_store(args)
    answered = 0
    stream = (q for _, q in questions())
    while chunk := list(itertools.islice(stream, ASK_MANY_CHUNK)):
        answers = mem.ask_many(
            args.namespace,
            chunk,
            mode=args.mode,
            k=args.k,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
        for q, a in zip(chunk, answers, strict=True):
            if args.json:
                row = {"question": q, **_answer_dict(a, args.explain)}
                sep = '{"answers": [' if answered == 0 else ","
                print(sep + json.dumps(row, ensure_ascii=False, default=str), flush=True)
            else:
                print(f"{q}\t{a.text}", flush=True)
                extra = f" module {a.modules[0]}" if a.modules else ""
                print(f"-- mode {a.mode}{extra}", file=sys.stderr)
            answered += 1
    if args.json:
        print("]}")
    return EXIT_OK


def _answer_dict(ans: Any, explain: bool) -> dict[str, Any]:
    """``ans.to_dict()``, without the routing keys unless ``--explain``."""
    out: dict[str, Any] = ans.to_dict()
    if out.get("route") and not explain:
        out["route"].pop("keys", None)
    return out


def _print_route(ans: Any) -> None:
    route = ans.route
    if route is None:
        print(f"-- route: none (mode {ans.requested_mode} does not route)", file=sys.stderr)
        return
    chosen = ", ".join(route["chosen"]) or "no module"
    print(f"-- route: {chosen} ({route['reason'] or 'n/a'})", file=sys.stderr)
    for c in route["candidates"][:5]:
        print(
            f"--   {c['module_id']}: best key {c['score']:.3f}, share {c['share']:.3f}, "
            f"confidence {c['confidence']:.3f}, {c['votes']} of the nearest keys; "
            f"key: {c['best_key'][:80]!r}",
            file=sys.stderr,
        )
