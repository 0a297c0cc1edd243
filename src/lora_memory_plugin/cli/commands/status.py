"""``lora-memory status``: the store's namespaces, record counts and model readiness."""

from __future__ import annotations

import argparse

from .._common import EXIT_OK, Parents, Subparsers, emit, open_store


def register(sub: Subparsers, parents: Parents) -> None:
    sp = sub.add_parser(
        "status",
        parents=[parents.store, parents.as_json],
        help="namespaces, record counts, model readiness",
    )
    sp.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    mem = open_store(args)
    st = mem.status()

    def human() -> None:
        print(
            f"store    {st.path}\nchroma   {st.backend}\nmodel    {st.base_model} "
            f"({'ready' if st.base_model_ready else 'not pulled: lora-memory models pull'})\n"
            f"embedder {st.embedder}\nrecords  {st.records}"
        )
        for n in st.namespaces:
            print(
                f"  {n.namespace!r}: {n.records} records ({n.buffered} buffered, "
                f"{n.consolidated} consolidated; {n.turns} turns, {n.documents} chunks), "
                f"{n.modules} module(s)"
            )
            for q in n.quarantined:
                print(f"    QUARANTINED {q['module_id']}: {q['reason']}")

    emit(args, st.to_dict(), human)
    return EXIT_OK
