"""``lora-memory serve``: the memory service over HTTP; ``lora-memory keys``: its API keys."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TYPE_CHECKING

from .._common import EXIT_FAILED, EXIT_OK, Parents, Subparsers, emit, open_store, store_dir

if TYPE_CHECKING:
    from ...service.keys import KeyRing


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "serve",
        parents=[parents.store],
        help="serve the store over HTTP (REST; API keys granted namespaces)",
        description=(
            "One process owns the store, the base model and the adapters; agents share them "
            "through REST (/v1/..., schema at /openapi.json) or RemoteMemory(url, api_key=...). "
            "Requests need an API key (`lora-memory keys create`) unless --no-auth, which binds "
            "to loopback only."
        ),
    )
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sp.add_argument(
        "--keys",
        default=None,
        metavar="FILE",
        help="the API key file (default DIR/api-keys.json; LORA_MEMORY_API_KEYS adds keys)",
    )
    sp.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without keys: every namespace to any local caller (loopback only)",
    )
    sp.add_argument(
        "--max-batch", type=int, default=16, help="most questions in one forward pass (16)"
    )
    sp.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="how long a question waits for others to share its forward pass (default 5)",
    )
    sp.add_argument(
        "--consolidate-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="check every namespace this often and consolidate those with --min-new-records "
        "buffered records, one job at a time (default: only when a client asks)",
    )
    sp.add_argument(
        "--min-new-records",
        type=int,
        default=8,
        metavar="N",
        help="buffered records that make a namespace due at a check (default 8)",
    )
    sp.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="PATTERN=SECONDS[:MIN]",
        help="another interval (and minimum) for the namespaces PATTERN matches, e.g. "
        "'team-*=600:4'; repeat for more, the first match wins",
    )
    sp.set_defaults(func=cmd_serve)

    kp = sub.add_parser("keys", help="create, list and revoke the service's API keys")
    ks = kp.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, helptext in (
        ("create", "make a key granted namespace patterns (printed once; stored hashed)"),
        ("list", "the keys: id, name, namespace patterns, created"),
        ("revoke", "remove a key by its id"),
    ):
        a = ks.add_parser(name, parents=[parents.as_json], help=helptext)
        a.add_argument("dir", metavar="DIR", help="the store directory")
        a.add_argument("--keys", default=None, metavar="FILE", help="default DIR/api-keys.json")
        if name == "create":
            a.add_argument(
                "--namespace",
                action="append",
                required=True,
                metavar="PATTERN",
                help="a namespace or shell pattern ('user-*', '*'); repeat for more",
            )
            a.add_argument("--name", default="", help="a label for people ('web app', 'cron')")
        if name == "revoke":
            a.add_argument("key_id", metavar="KEY_ID", help="the id `keys list` shows")
        a.set_defaults(func=cmd_keys)


def _ring(args: argparse.Namespace) -> KeyRing:
    from ...service.keys import KeyRing  # noqa: PLC0415 (stdlib only, but keeps --help light)
    from ...service.server import default_keys_path  # noqa: PLC0415

    return KeyRing(args.keys or default_keys_path(store_dir(args)))


def cmd_serve(args: argparse.Namespace) -> int:
    from ...service.jobs import Schedule  # noqa: PLC0415
    from ...service.server import check_auth_setting, serve  # noqa: PLC0415

    schedules = [Schedule.parse(s, args.min_new_records) for s in args.schedule]
    keys = None if args.no_auth else _ring(args)
    check_auth_setting(args.host, keys)  # before loading anything
    mem = open_store(args)
    serve(
        mem,
        keys,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        batch_wait_s=args.batch_wait_ms / 1000,
        consolidate_every=args.consolidate_every,
        min_new_records=args.min_new_records,
        schedules=schedules,
    )
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    ring = _ring(args)
    if args.keys_command == "create":
        key, g = ring.create(args.namespace, name=args.name)

        def created() -> None:
            print(key)
            print(
                f"key {g.key_id} granted {', '.join(g.namespaces)}: shown once, stored hashed "
                f"in {ring.path}",
                file=sys.stderr,
            )

        payload = {"key": key, "key_id": g.key_id, "name": g.name, "namespaces": list(g.namespaces)}
        emit(args, payload, created)
        return EXIT_OK
    if args.keys_command == "list":
        rows = [
            {
                "key_id": g.key_id,
                "name": g.name,
                "namespaces": list(g.namespaces),
                "created": dt.datetime.fromtimestamp(g.created_at, dt.timezone.utc).isoformat(
                    timespec="seconds"
                ),
            }
            for g in ring.grants()
        ]

        def human() -> None:
            for r in rows:
                print(f"{r['key_id']}  {', '.join(r['namespaces'])}  {r['created']}  {r['name']}")

        emit(args, {"keys": rows}, human)
        return EXIT_OK
    removed = ring.revoke(args.key_id)
    emit(
        args,
        {"revoked": removed, "key_id": args.key_id},
        lambda: print(f"revoked {args.key_id}" if removed else f"no key {args.key_id}"),
    )
    return EXIT_OK if removed else EXIT_FAILED
