"""``lora-memory search``: semantic search of a namespace's buffer."""

from __future__ import annotations

import argparse

from .._common import EXIT_OK, Parents, Subparsers, emit, open_store


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser("search", parents=parents.on_ns, help="semantic search of the buffer")
    sp.add_argument("query", metavar="QUERY")
    sp.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    sp.add_argument("--kind", choices=["turn", "document"], default=None)
    sp.add_argument("--session", default=None, metavar="ID")
    sp.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    mem = open_store(args)
    hits = mem.search(args.namespace, args.query, k=args.k, kind=args.kind, session_id=args.session)

    def human() -> None:
        if not hits:
            print("no hits")
        for h in hits:
            meta = h.metadata
            label = meta.get("role") or meta.get("source") or meta.get("kind")
            print(f"{h.score:.3f}  [{label}] {h.text[:200]}")

    emit(args, {"namespace": args.namespace, "hits": [h.to_dict() for h in hits]}, human)
    return EXIT_OK
