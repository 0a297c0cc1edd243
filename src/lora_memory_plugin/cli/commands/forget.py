"""``lora-memory forget``: delete records and retrain the modules that held them."""

from __future__ import annotations

import argparse
import json
import sys

from ...errors import InvalidInputError
from .._common import EXIT_FAILED, EXIT_OK, Parents, Subparsers, emit, open_store


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "forget",
        parents=parents.on_ns,
        help="delete records from the buffer and retrain the modules that held them",
        description="Delete records and every module that held one of them; the modules' other "
        "records are consolidated again (unless --no-rebuild: then the next consolidation "
        "does it). Exit 3 while a consolidation of the namespace runs.",
    )
    sp.add_argument("--id", action="append", default=[], metavar="ID", help="record id")
    sp.add_argument("--where", default=None, metavar="JSON", help='e.g. \'{"session_id": "s1"}\'')
    sp.add_argument(
        "--missing",
        action="store_true",
        help="the records the modules hold but the buffer lost (after checking the buffer is "
        "the right one: the answer to a MissingRecordsError)",
    )
    sp.add_argument("--no-rebuild", action="store_true", help="do not retrain now")
    sp.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    mem = open_store(args)
    where = None
    if args.where is not None:
        try:
            where = json.loads(args.where)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"--where must be a JSON object: {e}") from e
    if bool(args.id) + (where is not None) + args.missing != 1:
        raise InvalidInputError(
            "give exactly one of --id ID (repeatable), --where JSON or --missing"
        )
    report = mem.forget(
        args.namespace,
        args.id or None,
        where=where,
        missing=args.missing,
        rebuild=not args.no_rebuild,
        progress=sys.stderr.isatty() and not args.json,
    )

    def human() -> None:
        print(
            f"{report.namespace!r}: {report.deleted} record(s) deleted, "
            f"{len(report.modules_removed)} module(s) removed, {report.records_reset} record(s) "
            f"to retrain, {report.seconds:.1f}s"
        )
        if report.rebuild is not None:
            r = report.rebuild
            print(f"  rebuild: {r.status}, {len(r.modules_created)} module(s) made")
        for n in report.notes:
            print(f"  note: {n}")

    emit(args, report.to_dict(), human)
    rebuilt_ok = report.rebuild is None or report.rebuild.status in (
        "consolidated",
        "nothing_to_do",
    )
    return EXIT_OK if rebuilt_ok else EXIT_FAILED
