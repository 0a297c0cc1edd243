"""The ``forget`` part (on ``base_model``, SmolLM2 by default): PhoneBook facts are consolidated,
some of them forgotten (the module rebuilt from the rest). The forgotten facts must be known
before and, after, answered no better than the base model and absent from search; the kept
facts must stay >= 95%; a second namespace must not change."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...datasets.phonebook import phonebook
from ...memory import LoRAMemory
from .._common import hit
from ._shared import log


def _hits(mem: Any, ns: str, facts: list[Any], mode: str) -> list[bool]:
    answers = mem.ask_many(ns, [f.question for f in facts], mode=mode, max_new_tokens=16)
    return [hit(f.answer, a.text) for f, a in zip(facts, answers, strict=True)]


def run_forget(
    work: Path, base_model: str, *, facts: int = 8, forget: int = 2, seed: int = 0
) -> dict[str, Any]:
    """PhoneBook facts consolidated on ``base_model``; ``forget`` of them are forgotten (the module
    is rebuilt from the rest). A second namespace holds two more facts and must not change."""
    mem = LoRAMemory.open(work / "store", base_model=base_model)
    items = phonebook(facts + 2, seed=seed)
    mine, theirs = items[:facts], items[facts:]
    ids = mem.add_turns("ns", [{"content": f.text} for f in mine])
    mem.add_turns("other", [{"content": f.text} for f in theirs])
    t0 = time.time()
    [r1] = mem.consolidate("ns", seed=seed)
    [r2] = mem.consolidate("other", seed=seed)
    log(f"   consolidated: {r1.status} / {r2.status} in {time.time() - t0:.0f} s")
    gone, kept = mine[:forget], mine[forget:]
    before = {
        "lora_forgotten": _hits(mem, "ns", gone, "lora"),
        "lora_kept": _hits(mem, "ns", kept, "lora"),
        "base_forgotten": _hits(mem, "ns", gone, "base"),
        "other_lora": _hits(mem, "other", theirs, "lora"),
    }
    other_modules = sorted(m.module_id for m in mem.modules("other"))
    old_modules = sorted(m.module_id for m in mem.modules("ns"))
    t1 = time.time()
    report = mem.forget("ns", ids[:forget], seed=seed)
    forget_s = time.time() - t1
    after = {
        "lora_forgotten": _hits(mem, "ns", gone, "lora"),
        "lora_kept": _hits(mem, "ns", kept, "lora"),
        "base_forgotten": _hits(mem, "ns", gone, "base"),
        "rag_forgotten": _hits(mem, "ns", gone, "rag"),
        "other_lora": _hits(mem, "other", theirs, "lora"),
    }
    in_search = sum(
        any(f.answer in h.text for h in mem.search("ns", f.question, k=10)) for f in gone
    )
    new_modules = mem.modules("ns")
    held = {rid for m in new_modules for rid in m.record_ids}
    problems = []
    if sum(before["lora_forgotten"]) < len(gone):
        problems.append(f"only {sum(before['lora_forgotten'])}/{len(gone)} known before forget")
    if sum(after["lora_forgotten"]) > sum(after["base_forgotten"]):
        problems.append("a forgotten fact is recalled above the base model's level")
    if sum(after["lora_kept"]) < 0.95 * len(kept):
        problems.append(f"kept facts {sum(after['lora_kept'])}/{len(kept)} < 95%")
    if in_search or any(after["rag_forgotten"]):
        problems.append("a forgotten value is still in the buffer")
    if held & set(ids[:forget]) or set(old_modules) & {m.module_id for m in new_modules}:
        problems.append("a module holding a forgotten record is still live")
    if sorted(m.module_id for m in mem.modules("other")) != other_modules:
        problems.append("the other namespace's modules changed")
    if after["other_lora"] != before["other_lora"]:
        problems.append("the other namespace's answers changed")
    rate = {  # fraction of facts answered, per phase and check
        ph: {k: sum(v) / len(v) for k, v in d.items()}
        for ph, d in (("before", before), ("after", after))
    }
    return {
        "facts": facts,
        "forgotten": forget,
        "modules_before": len(old_modules),
        "modules_after": len(new_modules),
        "forget_report": {
            "deleted": report.deleted,
            "modules_removed": len(report.modules_removed),
            "records_reset": report.records_reset,
            "rebuild": report.rebuild.status if report.rebuild else None,
        },
        "forget_seconds": round(forget_s, 1),
        "recall": rate,
        "forgotten_in_search": in_search,
        "problems": problems,
        "ok": not problems,
    }
