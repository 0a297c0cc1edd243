"""``lora-memory modules``: list the committed LoRA modules (and, with --explain, their routing)."""

from __future__ import annotations

import argparse

from .._common import EXIT_OK, Parents, Subparsers, emit, open_store


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "modules", parents=[parents.store, parents.as_json], help="list the committed LoRA modules"
    )
    sp.add_argument("-n", "--namespace", default=None, metavar="NS", help="one namespace")
    sp.add_argument(
        "--explain", action="store_true", help="show each module's routing keys and questions"
    )
    sp.set_defaults(func=cmd_modules)


def cmd_modules(args: argparse.Namespace) -> int:
    mem = open_store(args)
    names = [args.namespace] if args.namespace else mem.namespaces()
    rows = []
    for ns in names:
        if args.explain:
            mem.routing.sync(ns)
        for m in mem.modules(ns):
            rows.append(
                {
                    "namespace": ns,
                    "module_id": m.module_id,
                    "records": len(m.record_ids),
                    "rank": m.rank,
                    "knowledge_tokens": m.knowledge_tokens,
                    "probe_recall": m.metrics.get("probe_recall"),
                    "created_at": m.created_at,
                    "base_model": m.base_model,
                }
            )
            if args.explain:
                rows[-1]["routing_keys"] = mem.routing.count(ns).get(m.module_id, 0)
                rows[-1]["probe_questions"] = [p["question"] for p in m.probes[:3]]

    def human() -> None:
        if not rows:
            print("no modules")
        for r in rows:
            print(
                f"{r['namespace']!r} {r['module_id']}: {r['records']} records, rank "
                f"{r['rank']}, {r['knowledge_tokens']} tokens, probe recall {r['probe_recall']}"
            )
            if args.explain:
                print(f"    routing keys: {r['routing_keys']}; routes e.g.:")
                for q in r["probe_questions"]:
                    print(f"      {q[:100]}")

    emit(args, {"modules": rows}, human)
    return EXIT_OK
