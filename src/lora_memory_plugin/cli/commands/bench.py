"""``lora-memory bench``: run the paper's benchmark suites; write JSON, Markdown and PNG results."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError
from .._common import EXIT_OK, Parents, Subparsers, emit


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "bench",
        parents=[parents.as_json],
        help="reproduce the paper's experiments on this machine: JSON, Markdown and PNG results",
        description="Runs benchmark suites through the public API in temporary stores and "
        "writes OUT/bench[-quick]-SUITE.{json,png} and OUT/bench[-quick].md (tables and the "
        "paper's findings checked against the numbers). Suites: capacity, modes, "
        "consolidation, write, updates, multimodule (the default), and conversation, mixtures, "
        "recall, serve (by name).",
    )
    sp.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help="suites to run (default: all but conversation, mixtures, recall and serve)",
    )
    sp.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: the default suites in < 10 min on 2 CPU cores",
    )
    sp.add_argument("--out", default="bench-results", help="output folder (default bench-results)")
    sp.add_argument(
        "--data", default=None, metavar="DIR", help="the paper's PhoneBook slices (else generated)"
    )
    sp.add_argument("--base-model", default=None, help="base model id or dir (default: SmolLM2)")
    sp.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a suite size, e.g. --set capacity.ranks=2,8,32 --set modes.people=8",
    )
    sp.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    # heavy (torch, matplotlib): only when run
    from ...bench import BenchOptions, run_bench  # noqa: PLC0415

    overrides = parse_set(args.set)
    options = BenchOptions(
        quick=args.quick,
        out=Path(args.out),
        data=Path(args.data) if args.data else None,
        base_model=args.base_model,
        device=args.device,
        seed=args.seed,
        progress=not args.json,
        overrides=overrides,
    )
    report = run_bench(args.suites, options)

    def human() -> None:
        for name, res in report["suites"].items():
            print(f"{name}: {res['seconds']:.0f}s")
        print(f"results in {options.out} ({report['seconds'] / 60:.1f} min)")

    emit(args, report, human)
    return EXIT_OK


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` items: a number, numbers joined by commas (a tuple), or else the text
    as given (``methods=distill,previous``, ``locomo=DIR``)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--set takes NAME=VALUE, got {item!r}")
        parts = [v.strip() for v in value.split(",")]
        try:
            nums = [float(v) if "." in v or "e" in v else int(v) for v in parts]
        except ValueError:  # a name list or a path: methods=distill,previous, locomo=DIR
            if not value.strip():
                raise InvalidInputError(f"--set {key}: empty value") from None
            overrides[key.strip()] = value.strip()
            continue
        overrides[key.strip()] = tuple(nums) if len(nums) > 1 else nums[0]
    return overrides
