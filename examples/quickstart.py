"""lora-memory quickstart: the whole loop on the default model, offline, on CPU.

Eight turns of a conversation are written (searchable at once), questions are answered from the
buffer (rag) and by the model alone (base), the namespace is consolidated into a LoRA module by
context distillation (a progress bar per stage), and the same questions are answered again in
rag, lora (the module alone, no context) and auto (the default: per question lora, hybrid or
rag, from the routing confidence and what the module's gate measured), with timings.

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
from lora_memory_plugin.datasets.personas import lisbon_story, score

NS = "dana"


def ask_all(mem: LoRAMemory, questions: list, mode: str) -> int:
    right = 0
    for q in questions:
        a = mem.ask(NS, q.question, mode=mode, max_new_tokens=32)
        ok = score(a.text, q)
        right += ok
        extra = f" as {a.mode}" if a.mode != mode else ""
        print(
            f"[{mode:5}{extra}] {q.question}\n"
            f"          -> {a.text.strip()[:100]!r} {'(right)' if ok else f'(expected {q.answer})'}"
            f"\n          {a.context_tokens} prompt tokens, total {a.timings['total']:.2f}s"
        )
    print(f"[{mode}] {right}/{len(questions)} right\n")
    return right


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="demo-memory", help="store directory (recreated)")
    ap.add_argument(
        "--max-minutes", type=float, default=4.0, help="training budget of the consolidation"
    )
    args = ap.parse_args()
    store = Path(args.store)
    if store.exists():
        shutil.rmtree(store)
    story = lisbon_story()
    questions = list(story.questions)

    t0 = time.perf_counter()
    mem = LoRAMemory.open(store)
    print(f"opened {mem} in {time.perf_counter() - t0:.2f}s")

    t0 = time.perf_counter()
    mem.add_turns(NS, [t.to_dict() for t in story.turns])
    print(f"wrote {len(story.turns)} turns in {time.perf_counter() - t0:.2f}s:")
    for t in story.turns:
        print(f"   ({t.role}, {t.session_id}) {t.content}")

    print("\n== search (the buffer is searchable at once) ==")
    t0 = time.perf_counter()
    hits = mem.search(NS, "allergies", k=2)
    print(f"'allergies' ({(time.perf_counter() - t0) * 1000:.1f} ms):")
    for h in hits:
        print(f"   {h.score:.3f}  {h.text[:90]!r}")

    print("\n== before consolidating ==")
    before = {mode: ask_all(mem, questions, mode) for mode in ("rag", "base")}

    print("== consolidate: questions -> teacher answers -> LoRA training -> gate ==")
    t0 = time.perf_counter()
    [report] = mem.consolidate(NS, progress=True, max_minutes=args.max_minutes)
    print(f"{report.status} in {time.perf_counter() - t0:.0f}s")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    for m in report.modules:
        name = f"module {m['module_id']}" if m["module_id"] else "module (not committed)"
        print(
            f"   {name}: {m['steps']} steps; on held-out questions lora agrees with the teacher "
            f"{pct(m.get('agreement_held_out'))}, hybrid {pct(m.get('hybrid_agreement'))} vs rag "
            f"{pct(m.get('rag_agreement'))}"
        )
    for note in report.notes:
        print(f"   note: {note}")

    print("\n== after consolidating ==")
    after = {mode: ask_all(mem, questions, mode) for mode in ("rag", "lora", "auto")}
    print(
        "summary: "
        + ", ".join(f"{m} before {v}/{len(questions)}" for m, v in before.items())
        + "; "
        + ", ".join(f"{m} after {v}/{len(questions)}" for m, v in after.items())
    )
    print(
        f"next: `lora-memory status {store}`, `lora-memory ask {store} -n {NS} "
        "'What am I allergic to?' --explain`"
    )


if __name__ == "__main__":
    main()
