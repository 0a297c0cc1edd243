"""``lora-memory init``: create a store directory (or report the one that is there)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...config import CONFIG_NAME
from ...errors import InvalidInputError
from .._common import EXIT_OK, Parents, Subparsers, emit, store_dir


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser("init", parents=[parents.as_json], help="create a store directory")
    sp.add_argument("dir", metavar="DIR")
    sp.add_argument(
        "--base-model",
        default=None,
        metavar="ID|PATH",
        help="'default' (SmolLM2-135M-Instruct), a Hugging Face id or a local path",
    )
    sp.add_argument(
        "--chroma-url",
        default=None,
        metavar="URL",
        help="keep the buffer in this Chroma server (http://host:port)",
    )
    sp.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    # heavy (torch, chromadb): only when the command runs
    from ...memory import LoRAMemory  # noqa: PLC0415

    existed = (Path(store_dir(args)) / CONFIG_NAME).exists()
    if existed and (args.base_model or args.chroma_url):
        raise InvalidInputError(
            f"{args.dir} is already a store; edit {Path(args.dir) / CONFIG_NAME} to change "
            "its base model or Chroma URL"
        )
    mem = LoRAMemory.open(store_dir(args), chroma_url=args.chroma_url, base_model=args.base_model)
    payload = {
        "path": str(mem.path),
        "created": not existed,
        "base_model": mem.config.models.base_model,
        "chroma": mem.chroma_url or "embedded",
    }
    emit(
        args,
        payload,
        lambda: print(
            f"{'created' if not existed else 'exists:'} store {mem.path} "
            f"(base model {payload['base_model']}, chroma {payload['chroma']})"
        ),
    )
    return EXIT_OK
