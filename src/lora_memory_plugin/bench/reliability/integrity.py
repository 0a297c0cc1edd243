"""The ``integrity`` part: rounds of two damages to a fresh module (a flipped byte in the
weights, another module's valid weights): each must be quarantined at load (rag answer that says
so, ``status`` lists it) and retrained by the next consolidation. A third fresh module gets a
manifest naming other base weights: no damage, so it must be skipped (rag answer that says so),
not quarantined, and left as it is by the next consolidation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ...registry import modules as registry
from ...testing import FAST
from .._common import hit

DAMAGES = ("corrupt", "swap")
OTHER_BASE = "base"


def run_integrity(mem: Any, *, rounds: int = 10) -> dict[str, Any]:
    """Each round damages a fresh module in each way (flipped bytes in the weights, another
    module's valid weights): the next question must fall back to rag and say why, ``status``
    must list the module as quarantined, nothing may load it, and the next consolidation must
    retrain its records into a new module that answers. A module whose manifest names other
    base weights is no damage (another process on that base model uses it): the question must
    fall back to rag and say why, the module must stay listed, unquarantined and unchanged, and
    the next consolidation must leave it alone."""
    donor_ns = "donor"
    mem.add_turns(
        donor_ns, [{"content": "Question: What is the code of the donor box? Answer: 5150"}]
    )
    mem.consolidate(donor_ns, **FAST)
    [donor] = mem.modules(donor_ns)
    donor_weights = (
        registry.modules_root(mem.path, donor_ns) / donor.module_id / registry.ADAPTER_WEIGHTS
    )
    stats = {f"{d}_{k}": 0 for d in DAMAGES for k in ("rounds", "caught", "retrained")}
    stats |= {f"{OTHER_BASE}_{k}": 0 for k in ("rounds", "skipped", "kept")}
    problems = []
    for r in range(rounds):
        for damage in (*DAMAGES, OTHER_BASE):
            ns = f"r{r}-{damage}"
            q, a = f"What is the code of box {r}{damage}?", f"{1000 + 97 * r + len(damage)}"
            mem.add_turns(ns, [{"content": f"Question: {q} Answer: {a}"}])
            mem.consolidate(ns, **FAST)
            [m] = mem.modules(ns)
            d = registry.modules_root(mem.path, ns) / m.module_id
            weights = d / registry.ADAPTER_WEIGHTS
            if damage == "corrupt":
                data = bytearray(weights.read_bytes())
                pos = random.Random(r).randrange(len(data) // 2, len(data))
                data[pos] ^= 0xFF
                weights.write_bytes(bytes(data))
            elif damage == "swap":
                weights.write_bytes(donor_weights.read_bytes())
            else:
                manifest = json.loads((d / registry.MANIFEST).read_text())
                manifest["base_fingerprint"] = f"{r:064x}"
                (d / registry.MANIFEST).write_text(json.dumps(manifest))
            stats[f"{damage}_rounds"] += 1
            if damage == OTHER_BASE:
                problems += _other_base_is_skipped(mem, ns, q, d, stats, r)
                continue
            ans = mem.ask(ns, q, mode="lora", max_new_tokens=8)
            [st] = [n for n in mem.status().namespaces if n.namespace == ns]
            caught = (
                ans.mode == "rag"
                and any("quarantined" in n for n in ans.notes)
                and mem.modules(ns) == []
                and [x["module_id"] for x in st.quarantined] == [m.module_id]
            )
            stats[f"{damage}_caught"] += caught
            if not caught:
                problems.append(f"round {r} {damage}: answered as {ans.mode}, notes {ans.notes}")
                continue
            [rep] = mem.consolidate(ns, **FAST)
            fixed = rep.status == "consolidated" and hit(
                a, mem.ask(ns, q, mode="lora", max_new_tokens=8).text
            )
            stats[f"{damage}_retrained"] += fixed
            if not fixed:
                problems.append(f"round {r} {damage}: re-consolidation {rep.status}")
    return {"rounds": rounds, "stats": stats, "problems": problems, "ok": not problems}


def _other_base_is_skipped(  # noqa: PLR0917
    mem: Any, ns: str, q: str, d: Path, stats: dict[str, int], r: int
) -> list[str]:
    """The module in ``d`` names other base weights: skipped, kept, not retrained."""
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    ans = mem.ask(ns, q, mode="lora", max_new_tokens=8)
    [st] = [n for n in mem.status().namespaces if n.namespace == ns]
    skipped = (
        ans.mode == "rag"
        and any("another base model" in n for n in ans.notes)
        and [m.module_id for m in mem.modules(ns)] == [d.name]
        and st.quarantined == ()
    )
    stats[f"{OTHER_BASE}_skipped"] += skipped
    if not skipped:
        return [f"round {r} {OTHER_BASE}: answered as {ans.mode}, notes {ans.notes}"]
    [rep] = mem.consolidate(ns, **FAST)
    kept = rep.status == "nothing_to_do" and {p.name: p.read_bytes() for p in d.iterdir()} == files
    stats[f"{OTHER_BASE}_kept"] += kept
    return [] if kept else [f"round {r} {OTHER_BASE}: consolidation {rep.status} changed it"]
