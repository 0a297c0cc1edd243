"""lora-memory quickstart: write turns and a document, search, and ask in rag and base mode.

Run it with `make demo` (sets up .venv and pulls the default models first), or directly:
    .venv/bin/python examples/quickstart.py [--store DIR]
Everything runs offline on CPU with the default models (SmolLM2-135M-Instruct + MiniLM).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from lora_memory_plugin import LoRAMemory

HANDBOOK = """\
Welcome to Northwind Labs. The office opens at 8:00 and closes at 18:30 on weekdays.
Visitors sign in at the front desk on the ground floor. The wifi network is called
NW-Guest and its password changes every Monday. Parking is in the basement, level -2;
spaces 40 to 55 are reserved for visitors. The cafeteria serves lunch from 11:45 to 14:00.
Fire drills take place on the first Thursday of each month at 10:00. In an emergency, call
the security desk on extension 5150. Lost badges are replaced by the facilities team in
room B-104 within one working day.
"""

TURNS = [
    ("user", "Hi! My name is Dana and I just joined the robotics team.", "s1"),
    ("assistant", "Welcome, Dana! How can I help you settle in?", "s1"),
    ("user", "My locker code is 4471, please remember it.", "s1"),
    ("user", "My manager is Priya Raman.", "s1"),
    ("user", "I'm allergic to peanuts, so keep that in mind for lunch suggestions.", "s2"),
    ("user", "My desk is number 318 on the third floor.", "s2"),
]

QUESTIONS = [
    "What is my locker code?",
    "Who is my manager?",
    "What am I allergic to?",
    "Which extension do I call in an emergency?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="demo-memory", help="store directory (recreated)")
    args = ap.parse_args()
    store = Path(args.store)
    if store.exists():
        shutil.rmtree(store)

    t0 = time.perf_counter()
    mem = LoRAMemory.open(store)
    print(f"opened {mem} in {time.perf_counter() - t0:.2f}s")

    t0 = time.perf_counter()
    for role, content, session in TURNS:
        mem.add_turn("dana", content, role=role, session_id=session)
    ids = mem.add_document("dana", HANDBOOK, source="handbook.md")
    print(
        f"wrote {len(TURNS)} turns and a document ({len(ids)} chunks) "
        f"in {time.perf_counter() - t0:.2f}s (first write loads the embedder)"
    )

    print("\n== search (buffer, searchable at once) ==")
    for query in ("locker", "where do visitors park"):
        t0 = time.perf_counter()
        hits = mem.search("dana", query, k=2)
        ms = (time.perf_counter() - t0) * 1000
        print(f"'{query}' ({ms:.1f} ms):")
        for h in hits:
            print(f"   {h.score:.3f}  {h.text[:90]!r}")

    print("\n== ask: rag (buffer hits in context) vs base (model alone) ==")
    for q in QUESTIONS:
        for mode in ("rag", "base"):
            a = mem.ask("dana", q, mode=mode, max_new_tokens=32)
            t = a.timings
            print(
                f"[{mode:4}] {q}\n       -> {a.text[:120]!r}\n       "
                f"{a.context_tokens} prompt tokens, {len(a.sources)} sources, "
                f"generate {t['generate']:.2f}s, total {t['total']:.2f}s"
            )
    a = mem.ask("dana", QUESTIONS[0], mode="hybrid", max_new_tokens=16)
    print(f"\n[hybrid] {QUESTIONS[0]} -> {a.text!r}\n       note: {a.notes[0]}")

    st = mem.status()
    print(f"\nstatus: {st.records} records in {len(st.namespaces)} namespace(s) at {st.path}")
    print(
        "next: `lora-memory status demo-memory`, `lora-memory ask demo-memory -n dana "
        "'Where is my desk?' --mode rag`"
    )


if __name__ == "__main__":
    main()
