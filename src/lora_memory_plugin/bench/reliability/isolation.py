"""The ``isolation`` part: 20 namespaces with hostile names (``../``, NUL, slashes, Unicode, lone
surrogates, 4096-char names, names that differ only in case or punctuation), two holding LoRA
modules with the *same* questions and different answers; random ``search`` / ``route`` / ``ask``
calls must never return a record, key or module of another namespace, and every file the store
creates stays under its directory."""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ...testing import FAST
from ._shared import sentence

HOSTILE_NAMESPACES = [
    "user-42",
    "../../escape",
    "..",
    ".",
    "/etc/passwd",
    "a/b",
    "a-b",
    "a_b",
    "A-B",
    "nul\x00byte",
    "nul\x00bytf",
    "名前/ユーザー",
    "emoji 🙂 ns",
    "lone \ud800 surrogate",
    "x" * 4096,
    "x" * 4095 + "y",
    "lm-user-42",
    "  spaced  ",
    "C:\\Windows\\system32",
    "new\nline",
]
QA = [
    ("What is the code of box 0?", "4471"),
    ("What is the code of box 1?", "9302"),
]


def _tag(j: int) -> str:
    return f"[owner {j:02d}]"


def build_isolation_store(
    mem: Any, *, records: int = 12, with_modules: int = 2, rng_seed: int = 0
) -> dict[str, Any]:
    """Fill 20 hostile namespaces; consolidate the first ``with_modules`` (same questions,
    different answers); every namespace also holds one text shared with all the others."""
    rng = random.Random(rng_seed)
    ids: dict[str, set[str]] = {}
    for j, ns in enumerate(HOSTILE_NAMESPACES):
        turns = [
            {"content": f"{_tag(j)} note {i}: {sentence(rng)}", "metadata": {"owner": j}}
            for i in range(records)
        ]
        turns.append({"content": "the same sentence in every namespace", "metadata": {"owner": j}})
        if j < with_modules:  # same questions everywhere, answers differ per namespace
            turns += [
                {"content": f"Question: {q} Answer: {a[j:] + a[:j]}", "metadata": {"owner": j}}
                for q, a in QA
            ]
        ids[ns] = set(mem.add_turns(ns, turns))
        if j < with_modules:
            [rep] = mem.consolidate(ns, **FAST)
            if rep.status != "consolidated":
                raise RuntimeError(f"consolidation of namespace {j} failed: {rep}")
    modules = {ns: {m.module_id for m in mem.modules(ns)} for ns in HOSTILE_NAMESPACES}
    return {"ids": ids, "modules": modules}


def run_isolation(
    mem: Any,
    built: dict[str, Any],
    *,
    queries: int = 10_000,
    ask_share: float = 0.05,
    seed: int = 0,
    parent: Path | None = None,
) -> dict[str, Any]:
    """Random search / route / ask calls; count anything from another namespace."""
    rng = random.Random(seed)
    ids, modules = built["ids"], built["modules"]
    nss = HOSTILE_NAMESPACES
    counts: Counter[str] = Counter()
    leaks: list[str] = []
    results: Counter[str] = Counter()
    t0 = time.time()
    for q in range(queries):
        j = rng.randrange(len(nss))
        ns = nss[j]
        other = rng.randrange(len(nss))
        query = rng.choice(
            [
                f"{_tag(other)} note {rng.randrange(12)}",
                sentence(rng, rng.randint(1, 8)),
                "the same sentence in every namespace",
                rng.choice(QA)[0],
            ]
        )
        r = rng.random()
        op = "ask" if r < ask_share else "search" if r < 0.6 else "route"
        counts[op] += 1
        where = f"query {q} ({op}) in namespace {j}"
        if op == "search":
            hits = mem.search(ns, query, k=rng.choice([1, 5, 20, 50]))
            results["search_hits"] += len(hits)
            for h in hits:
                if h.id not in ids[ns] or h.metadata.get("owner") != j:
                    leaks.append(f"{where}: hit {h.id} owner {h.metadata.get('owner')}")
        elif op == "route":
            d = mem.route(ns, query)
            results["route_candidates"] += len(d.candidates)
            for c in d.candidates:
                if c.module_id not in modules[ns]:
                    leaks.append(f"{where}: candidate module {c.module_id}")
            for key in d.keys:
                results["route_keys"] += 1
                if key.module_id not in modules[ns] or (
                    key.record_id and key.record_id not in ids[ns]
                ):
                    leaks.append(f"{where}: key {key.module_id}/{key.record_id}")
        else:
            mode = rng.choice(["rag", "hybrid", "lora"])
            ans = mem.ask(ns, query, mode=mode, max_new_tokens=4)
            results["ask_sources"] += len(ans.sources)
            results["ask_with_module"] += bool(ans.modules)
            for h in ans.sources:
                if h.id not in ids[ns] or h.metadata.get("owner") != j:
                    leaks.append(f"{where}: source {h.id} owner {h.metadata.get('owner')}")
            for mid in ans.modules:
                if mid not in modules[ns]:
                    leaks.append(f"{where}: answered with module {mid}")
    seconds = time.time() - t0
    # the records per namespace: exactly what was written there, nothing shared
    per_ns_problems = []
    for j, ns in enumerate(nss):
        recs = mem.get(ns)
        if {r.id for r in recs} != ids[ns] or any(r.metadata.get("owner") != j for r in recs):
            per_ns_problems.append(f"namespace {j}: records differ from what was written")
    listed = mem.namespaces()
    if sorted(listed) != sorted(nss):
        per_ns_problems.append(f"namespaces() lists {len(listed)} names, {len(nss)} written")
    disk = check_disk(mem.path, parent)
    return {
        "namespaces": len(nss),
        "namespaces_with_modules": sum(1 for v in modules.values() if v),
        "queries": queries,
        "by_op": dict(counts),
        "results_checked": dict(results),
        "cross_namespace_results": len(leaks),
        "leaks": leaks[:20],
        "store_problems": per_ns_problems,
        "disk": disk,
        "seconds": round(seconds, 1),
        "ok": not leaks and not per_ns_problems and not disk["problems"],
    }


_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


def check_disk(store: Path, parent: Path | None) -> dict[str, Any]:
    """Every path under the store resolves inside it; no raw namespace reached a file name;
    ``parent`` (the store's own parent dir) holds nothing but the store."""
    root = store.resolve()
    problems = []
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            n += 1
            p = Path(dirpath) / name
            real = p.resolve()
            if root not in real.parents and real != root:
                problems.append(f"{p} resolves outside the store: {real}")
            if p.is_symlink():
                problems.append(f"{p} is a symlink")
            if not _SAFE_NAME.fullmatch(name):  # a raw namespace never names a file
                problems.append(f"unexpected file name {name!r} in {dirpath}")
    mods = root / "modules"
    if mods.exists():
        for d in mods.iterdir():
            if not d.name.startswith("lm-"):
                problems.append(f"modules/{d.name} is not an encoded namespace")
    if parent is not None:
        extra = [p.name for p in parent.iterdir() if p.resolve() != root]
        if extra:
            problems.append(f"created next to the store: {extra}")
    return {"paths_checked": n, "problems": problems}
