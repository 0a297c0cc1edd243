"""``lora-memory consolidate``: train buffered records into LoRA modules (what cron runs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...errors import InvalidInputError
from .._common import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    Parents,
    Subparsers,
    emit,
    open_store,
    pct,
)


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "consolidate",
        parents=[parents.store, parents.as_json],
        help="train buffered records into LoRA modules (cron: --all --json)",
    )
    who = sp.add_mutually_exclusive_group(required=True)
    who.add_argument("-n", "--namespace", metavar="NS", help="one namespace")
    who.add_argument("--all", action="store_true", help="every namespace in the store")
    sp.add_argument(
        "--min-records",
        type=int,
        default=1,
        metavar="N",
        help="do nothing for a namespace with fewer buffered records (default 1)",
    )
    sp.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        metavar="M",
        help="training wall-time budget per namespace",
    )
    sp.add_argument(
        "--rank", type=int, default=None, help="LoRA rank of new modules (default: calibrated)"
    )
    sp.add_argument(
        "--target", type=float, default=None, help="probe exact match a module needs (0-1)"
    )
    sp.add_argument("--max-steps", type=int, default=None, help="training steps per module")
    sp.add_argument(
        "--mixture",
        default=None,
        help="training data: distill (context distillation), distill+original, qa+original, "
        "all (default: config)",
    )
    sp.add_argument(
        "--writer",
        choices=("local", "none"),
        default=None,
        help="synthetic-data writer: the local base model, or none (default: config)",
    )
    sp.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="with --all: one Ray task per namespace (a GPU each when the cluster has them); "
        "ADDRESS of a running cluster (ray://host:10001, auto), or none to start a local one "
        "(needs the ray extra)",
    )
    sp.set_defaults(func=cmd_consolidate)


def cmd_consolidate(args: argparse.Namespace) -> int:
    mem = open_store(args)
    options: dict[str, Any] = {"min_records": args.min_records}
    for name in ("max_minutes", "rank", "target", "max_steps", "mixture", "writer"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    ns = None if args.all else args.namespace
    if args.ray is not None:
        if not args.all:
            raise InvalidInputError("--ray fans out over namespaces: use it with --all")
        from ...fanout import consolidate_on_ray  # noqa: PLC0415 (imports ray)

        address = None if args.ray == "local" else args.ray
        reports = consolidate_on_ray(mem, address=address, options=options)
    else:
        reports = mem.consolidate(ns, progress=sys.stderr.isatty() and not args.json, **options)

    def human() -> None:
        if not reports:
            print("no namespaces to consolidate")
        for r in reports:
            _print_report(r)

    failed = [r for r in reports if r.status in ("kept_buffered", "partial", "failed")]
    locked = [r for r in reports if r.status == "locked"]
    payload = {
        "reports": [r.to_dict() for r in reports],
        "failed": len(failed),
        "locked": len(locked),
    }
    emit(args, payload, human)
    return EXIT_FAILED if failed else EXIT_LOCKED if locked else EXIT_OK


def _print_report(r: Any) -> None:
    line = f"{r.namespace!r}: {r.status}, {r.records_in} record(s) in"
    if r.modules_created:
        line += (
            f", {r.records_consolidated} consolidated into {len(r.modules_created)} "
            f"module(s), {r.steps} steps, {r.seconds:.1f}s, "
            f"{r.tokens_per_second:.0f} tok/s"
        )
    print(line)
    for m in r.modules:
        verb = "extends " + m["extends"] if m["extends"] else "new"
        state = m["module_id"] if m["committed"] else "not committed"
        print(
            f"  {state} ({verb}): {m['records']} records, {m['knowledge_tokens']} "
            f"tokens, {m['steps']} steps, probe recall {pct(m['probe_recall'])}, "
            f"drift {pct(m['drift'], signed=True)}"
        )
    for n in r.notes:
        print(f"  note: {n}")
