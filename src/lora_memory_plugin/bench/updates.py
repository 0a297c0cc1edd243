"""``updates``: a value that changes over time; after an update the latest value must win.

Version 1 of every entity is added and consolidated; version 2 is added later (a newer
``created_at``). Questions are asked right after the update (version 2 still buffered) and after
consolidating again (the module is retrained on old + new records; a QA record that a newer
record answers again is left out of training, so the latest wins). Per mode: the share of
answers with the current value and the share with a stale one.
"""

from __future__ import annotations

import time
from typing import Any

from ..datasets.updates import knowledge_updates
from ._common import Context, fmt_pct, hit, md_table, rate

NAME = "updates"
NS = "updates"
MODES = ("lora", "hybrid", "rag")


def _ask(ctx: Context, mem: Any, items: list[Any], tokens: int) -> dict[str, Any]:
    out = {}
    for mode in MODES:
        answers = mem.ask_many(NS, [u.question for u in items], mode=mode, max_new_tokens=tokens)
        out[mode] = {
            "current": rate([hit(u.answer, a.text) for u, a in zip(items, answers, strict=True)]),
            "stale": rate(
                [
                    any(hit(v, a.text) for v in u.values[:-1])
                    for u, a in zip(items, answers, strict=True)
                ]
            ),
            "answered_as": sorted({a.mode for a in answers}),
        }
    return out


def run(ctx: Context) -> dict[str, Any]:
    n = int(ctx.size("entities", 2, 48))
    tokens = int(ctx.size("new_tokens", 16, 16))
    items = knowledge_updates(n, versions=2, seed=ctx.options.seed)
    mem = ctx.store(NAME)
    t = time.time()
    mem.add_turns(NS, [{"content": u.text(0), "role": "user", "created_at": t} for u in items])
    [r1] = mem.consolidate(NS, seed=ctx.options.seed, **ctx.train_options())
    mem.add_turns(NS, [{"content": u.text(1), "role": "user", "created_at": t + 60} for u in items])
    after_update = _ask(ctx, mem, items, tokens)
    ctx.log(f"updates, before re-consolidation: {after_update}")
    [r2] = mem.consolidate(NS, seed=ctx.options.seed, **ctx.train_options())
    after_consolidation = _ask(ctx, mem, items, tokens)
    ctx.log(f"updates, after re-consolidation: {after_consolidation}")
    return {
        "config": {"entities": n, "versions": 2},
        "consolidations": [r1.status, r2.status],
        "modules": len(mem.modules(NS)),
        "after_update": after_update,
        "after_consolidation": after_consolidation,
    }


def markdown(res: dict[str, Any]) -> str:
    rows = []
    for phase, label in (
        ("after_update", "v2 buffered"),
        ("after_consolidation", "v2 consolidated"),
    ):
        for mode, r in res[phase].items():
            rows.append(
                [
                    label,
                    mode,
                    fmt_pct(r["current"]),
                    fmt_pct(r["stale"]),
                    ",".join(r["answered_as"]),
                ]
            )
    return md_table(["phase", "mode", "latest value", "stale value", "answered as"], rows)


def plot(res: dict[str, Any], ax: Any) -> None:
    labels, cur, stale = [], [], []
    for phase, tag in (("after_update", "buffered"), ("after_consolidation", "consolidated")):
        for mode, r in res[phase].items():
            labels.append(f"{mode}\n{tag}")
            cur.append(100 * r["current"])
            stale.append(100 * r["stale"])
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], cur, 0.4, label="latest")
    ax.bar([x + 0.2 for x in xs], stale, 0.4, label="stale")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("answers (%)")
    ax.set_title("updates: latest vs stale value")
    ax.legend()
