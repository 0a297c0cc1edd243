"""``lora-memory calibrate``: measure how much a module of each LoRA rank holds; save it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...errors import InvalidInputError
from .._common import EXIT_FAILED, EXIT_OK, Parents, Subparsers, emit, open_store


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "calibrate",
        parents=[parents.store, parents.as_json],
        help="measure how many knowledge tokens a module of each rank holds; save in the config",
    )
    sp.add_argument("--ranks", default="4,16", help="comma-separated LoRA ranks (default 4,16)")
    sp.add_argument("--start-facts", type=int, default=24, help="first sweep size (default 24)")
    sp.add_argument("--max-facts", type=int, default=384, help="largest sweep size (default 384)")
    sp.add_argument(
        "--target", type=float, default=0.95, help="recall a size must reach (default 0.95)"
    )
    sp.add_argument(
        "--max-epochs", type=int, default=40, help="epochs a size may train (default 40)"
    )
    sp.add_argument("--max-minutes", type=float, default=None, help="wall-time budget")
    sp.add_argument("--dry-run", action="store_true", help="measure only, do not save")
    sp.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    mem = open_store(args)
    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError as e:
        raise InvalidInputError(f"--ranks takes comma-separated ints, got {args.ranks!r}") from e

    def show(p: Any) -> None:
        if not args.json:
            print(
                f"r={p.rank}: {p.facts} facts ({p.tokens} tokens) -> {p.recall:.1%} recall, "
                f"{p.steps} steps, {p.seconds:.0f}s",
                file=sys.stderr,
            )

    report = mem.calibrate(
        ranks,
        start_facts=args.start_facts,
        max_facts=args.max_facts,
        target=args.target,
        max_epochs=args.max_epochs,
        max_minutes=args.max_minutes,
        save=not args.dry_run,
        progress=sys.stderr.isatty() and not args.json,
        on_point=show,
    )

    def human() -> None:
        for rank in ranks:
            tokens = report.capacity_tokens.get(rank)
            print(
                f"r={rank}: "
                + (f"{tokens} tokens at >= {report.target:.0%}" if tokens else "no size passed")
            )
        print("saved to the store config" if report.capacity_tokens and not args.dry_run else "")

    emit(args, report.to_dict(), human)
    return EXIT_OK if report.capacity_tokens else EXIT_FAILED
