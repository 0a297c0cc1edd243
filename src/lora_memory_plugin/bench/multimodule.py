"""``multimodule``: many small modules with real routing vs oracle routing vs one big module.

PhoneBook facts go into one namespace consolidated as ``modules`` rank-``rank`` modules (the
capacity is set so the planner splits them), and into a second store as one module of the same
parameter count (rank ``modules * rank``). Then every question is asked: routed top-1 (``ask_many``
in lora mode), oracle (each question with the module that holds its record), the big module.
Routing accuracy is reported on its own (chosen module == owner).
"""

from __future__ import annotations

import time
from typing import Any

from ..consolidation.data import parse_qa
from ..generation.prompts import build_messages
from ..registry import modules as registry
from ._common import Context, fmt_pct, hit, load_phonebook, md_table, rate

NAME = "multimodule"
NS = "phonebook"


def _consolidate(
    ctx: Context, mem: Any, facts: list[tuple[str, str]], rank: int, per_module: int
) -> Any:
    mem.update_config(consolidation={"capacity_tokens": {str(rank): per_module}})
    mem.add_turns(NS, [{"content": f"Question: {q} Answer: {a}", "role": "user"} for q, a in facts])
    t0 = time.perf_counter()
    [report] = mem.consolidate(NS, rank=rank, seed=ctx.options.seed, **ctx.train_options())
    return report, time.perf_counter() - t0


def _owners(mem: Any, questions: list[str]) -> list[str]:
    by_q = {}
    for r in mem.get(NS):
        qa = parse_qa(r.text)
        if qa is not None:
            by_q[qa[0]] = str(r.metadata.get("module_id") or "")
    return [by_q.get(q, "") for q in questions]


def routed_and_oracle(
    mem: Any, qs: list[str], own: list[str], tokens: int
) -> tuple[list[Any], list[str], list[Any], float]:
    """The questions routed by the store (``ask_many`` in lora mode: answers and the module each
    chose), answered with the module holding each one's record (oracle routing), and the
    seconds the routed answers took."""
    t0 = time.perf_counter()
    routed = mem.ask_many(NS, qs, mode="lora", max_new_tokens=tokens)
    seconds = time.perf_counter() - t0
    chosen = [a.modules[0] if a.modules else "" for a in routed]
    root = registry.modules_root(mem.path, NS)
    system = mem.config.generation.system_prompt
    oracle = mem.generator().chat_routed(
        [build_messages(system, q, []) for q in qs],
        [(m, root / m) if m else None for m in own],
        max_new_tokens=tokens,
    )
    return routed, chosen, oracle, seconds


def run(ctx: Context) -> dict[str, Any]:
    n = int(ctx.size("facts", 2, 384))
    modules = int(ctx.size("modules", 2, 8))
    rank = int(ctx.size("rank", 4, 4))
    tokens = int(ctx.size("new_tokens", 16, 16))
    facts = load_phonebook(ctx, n)
    qs = [q for q, _ in facts]
    many = ctx.store(NAME)
    knowledge = sum(many.generator().count_tokens(f"Question: {q} Answer: {a}") for q, a in facts)
    per_module = int(knowledge / modules / many.config.consolidation.capacity_margin) + 8
    ctx.log(f"multimodule: {n} facts ({knowledge} tokens) -> {modules} x r={rank}")
    rep_many, s_many = _consolidate(ctx, many, facts, rank, per_module)
    own = _owners(many, qs)
    routed, chosen, oracle, _ = routed_and_oracle(many, qs, own, tokens)
    big = ctx.store(NAME + "-big")
    ctx.log(f"multimodule: one module at r={modules * rank}")
    rep_big, s_big = _consolidate(ctx, big, facts, modules * rank, 10 * knowledge)
    one = big.ask_many(NS, qs, mode="lora", max_new_tokens=tokens)

    def em(replies: list[str]) -> float:
        return rate([hit(a, r) for (_, a), r in zip(facts, replies, strict=True)])

    return {
        "config": {"facts": n, "knowledge_tokens": knowledge, "modules": modules, "rank": rank},
        "modules_made": len(set(own) - {""}),
        "routing_accuracy": rate([c == o for c, o in zip(chosen, own, strict=True)]),
        "routed_top1_em": em([a.text for a in routed]),
        "oracle_em": em([g.text for g in oracle]),
        "one_big_module_em": em([a.text for a in one]),
        "one_big_module_rank": modules * rank,
        "consolidate_seconds": {"many": s_many, "one_big": s_big},
        "probe_recall": {"many": rep_many.probe_recall, "one_big": rep_big.probe_recall},
    }


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    rows = [
        [f"{res['modules_made']} x r={c['rank']}, routed top-1", fmt_pct(res["routed_top1_em"])],
        [f"{res['modules_made']} x r={c['rank']}, oracle routing", fmt_pct(res["oracle_em"])],
        [
            f"1 x r={res['one_big_module_rank']} (same parameters)",
            fmt_pct(res["one_big_module_em"]),
        ],
    ]
    out = md_table(["setup", "EM"], rows)
    return out + f"\n\nRouting accuracy: {fmt_pct(res['routing_accuracy'])}."


def plot(res: dict[str, Any], ax: Any) -> None:
    names = ["routed top-1", "oracle", "one big"]
    vals = [res["routed_top1_em"], res["oracle_em"], res["one_big_module_em"]]
    ax.bar(names, [100 * v for v in vals], color=["tab:blue", "tab:green", "tab:gray"])
    ax.set_ylabel("exact match (%)")
    ax.set_title(f"multimodule: {res['config']['facts']} facts")
