"""``recall``: recall across a many-module namespace: routing, composition, modes, batching.

PhoneBook facts (the paper's rows with ``--data``, else generated) are consolidated through the
public API into ``modules`` rank-``rank`` modules (the capacity is set so the planner splits them,
as in ``multimodule``); the first ``questions`` facts are asked, as the paper's eval files write
them (no question mark):

- **routing**: routed top-1 (``ask_many`` in ``lora`` mode) vs oracle routing (each question
  with the module that holds its record) vs a TIES merge (peft ``add_weighted_adapter``,
  ``combination_type="ties"``) of the top-3 routed modules and of all modules; routing accuracy
  on its own (chosen module == the module holding the question's record);
- **modes**: lora / hybrid / rag / icl / base on the same questions, the modes interleaved
  question by question (the order rotates): exact match, p50/p95 latency of single ``ask``
  calls, prompt tokens, tokens out and ms per token out;
- **batching**: ``ask_many`` (one mixed multi-adapter batch per 16 questions; the stacked LoRA
  forward and peft's per-module loop) vs one ``ask`` at a time, questions ordered so
  consecutive ones use different modules (an adapter switch each).

Full sizes are the former ``benchmarks/recall.py`` defaults: the PhoneBook 2K slice (97 facts,
its 75 eval questions: the first 75 rows) in 4 r=16 modules; ``--set recall.facts=48 --set
recall.questions=37`` is the 1K slice; ``--set recall.parts=modes,batching`` runs some parts.
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

from .._device import quiet_loading
from ..errors import InvalidInputError
from ..generation.prompts import build_messages
from ..memory import LoRAMemory
from ..registry import modules as registry
from ._common import Context, fmt_pct, hit, load_phonebook, md_table, median, pct, rate
from .multimodule import _consolidate, _owners, routed_and_oracle

NAME = "recall"
NS = "phonebook"
MODES = ("lora", "hybrid", "rag", "icl", "base")
PARTS = ("routing", "ties", "modes", "batching")

QA = list[tuple[str, str]]  # (question as asked, expected number)


def run(ctx: Context) -> dict[str, Any]:
    n = int(ctx.size("facts", 2, 97))
    n_q = max(1, min(n, int(ctx.size("questions", 2, 75))))
    modules = int(ctx.size("modules", 2, 4))
    rank = int(ctx.size("rank", 16, 16))
    tokens = int(ctx.size("new_tokens", 16, 16))
    density = float(ctx.size("density", 0.5, 0.5))
    parts = str(ctx.size("parts", ",".join(PARTS), ",".join(PARTS))).split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise InvalidInputError(f"recall.parts: unknown {sorted(unknown)}; choose from {PARTS}")
    facts = load_phonebook(ctx, n)
    mem = ctx.store(NAME)
    knowledge = sum(mem.generator().count_tokens(f"Question: {q} Answer: {a}") for q, a in facts)
    per_module = int(knowledge / modules / mem.config.consolidation.capacity_margin) + 8
    ctx.log(f"recall: {n} facts ({knowledge} tokens) -> capacity {per_module}/module at r={rank}")
    report, seconds = _consolidate(ctx, mem, facts, rank, per_module)
    made = len(mem.modules(NS))
    ctx.log(f"recall: consolidate {report.status}, {made} modules, {seconds:.0f}s")
    own = _owners(mem, [q for q, _ in facts[:n_q]])
    evals = [(q.rstrip("?").strip(), a) for q, a in facts[:n_q]]
    out: dict[str, Any] = {
        "config": {
            "facts": n,
            "questions": n_q,
            "modules": modules,
            "rank": rank,
            "new_tokens": tokens,
            "density": density,
            "parts": parts,
            "seed": ctx.options.seed,
            "data": str(ctx.options.data) if ctx.options.data else "generated",
        },
        "facts": n,
        "knowledge_tokens": knowledge,
        "modules": made,
        "build": {
            "status": report.status,
            "seconds": seconds,
            "steps": report.steps,
            "probe_recall": report.probe_recall,
            "modules": [dict(m) for m in report.modules],
            "notes": list(report.notes),
        },
    }
    if "routing" in parts:
        out["routing"] = routing(ctx, mem, evals, own, tokens)
    if "ties" in parts:
        out["ties"] = ties(ctx, mem, evals, tokens, density)
    if "modes" in parts:
        out["modes"] = modes(ctx, mem, evals, tokens)
    if "batching" in parts:
        out["batching"] = batching(ctx, mem, evals, own, tokens)
    out["summary"] = summary(out)
    return out


def _em(evals: QA, replies: list[str]) -> float:
    return rate([hit(a, r) for (_, a), r in zip(evals, replies, strict=True)])


def routing(
    ctx: Context, mem: LoRAMemory, evals: QA, own: list[str], tokens: int
) -> dict[str, Any]:
    """Routed top-1 vs oracle routing (the module holding each record), as ``multimodule``."""
    qs = [q for q, _ in evals]
    routed, chosen, oracle, routed_s = routed_and_oracle(mem, qs, own, tokens)
    out = {
        "questions": len(qs),
        "routing_accuracy": rate([c == o for c, o in zip(chosen, own, strict=True)]),
        "routed_top1_em": _em(evals, [a.text for a in routed]),
        "oracle_em": _em(evals, [g.text for g in oracle]),
        "routed_seconds": routed_s,
        "confidence_p50": median([a.confidence for a in routed]),
        "fell_back": sum(a.mode != "lora" for a in routed),
        "wrong_routes": [
            {"question": q, "chosen": c, "owner": o}
            for q, c, o in zip(qs, chosen, own, strict=True)
            if c != o
        ][:10],
    }
    ctx.log(f"recall routing: { {k: v for k, v in out.items() if k != 'wrong_routes'} }")
    return out


def ties(ctx: Context, mem: LoRAMemory, evals: QA, tokens: int, density: float) -> dict[str, Any]:
    """TIES merges through peft, on a separate float32 copy of the base model."""
    import torch  # noqa: PLC0415 (heavy; only when this part runs)
    from peft import PeftModel  # noqa: PLC0415 (heavy; only when this part runs)
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 (heavy; only when it runs)

    mods = [m.module_id for m in mem.modules(NS)]
    if not mods:
        ctx.log("recall ties: no module was committed; skipped")
        return {"density": density, "skipped": "no modules"}
    gen = mem.generator()
    root = registry.modules_root(mem.path, NS)
    with quiet_loading(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations, via peft
        base: Any = AutoModelForCausalLM.from_pretrained(gen.path, dtype=torch.float32)
        model: Any = PeftModel.from_pretrained(base, str(root / mods[0]), adapter_name=mods[0])
        for m in mods[1:]:
            model.load_adapter(str(root / m), adapter_name=m)
    model.to(gen.device).eval()
    tok = gen.tokenizer
    system = mem.config.generation.system_prompt
    merged: dict[tuple[str, ...], str] = {}

    def merged_name(names: tuple[str, ...]) -> str:
        if names not in merged:
            name = f"ties{len(merged)}"
            model.add_weighted_adapter(
                list(names), [1.0] * len(names), name, combination_type="ties", density=density
            )
            merged[names] = name
        return merged[names]

    def answer(question: str, adapter: str) -> str:
        model.set_adapter(adapter)
        prompt = gen.render(build_messages(system, question, []))
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False).to(gen.device)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
        return str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))

    top3, all_ = [], []
    t0 = time.perf_counter()
    name_all = merged_name(tuple(mods))
    for i, (q, _) in enumerate(evals):
        names = tuple(sorted(c.module_id for c in mem.route(NS, q).candidates[:3]))
        if len(names) < 2:
            names = tuple(sorted(mods[:3]))
        top3.append(answer(q, merged_name(names)))
        all_.append(answer(q, name_all))
        if (i + 1) % 24 == 0:
            ctx.log(f"recall ties: {i + 1}/{len(evals)}")
    out = {
        "density": density,
        "top3_ties_em": _em(evals, top3),
        "all_ties_em": _em(evals, all_),
        "merges_built": len(merged),
        "seconds": time.perf_counter() - t0,
    }
    ctx.log(f"recall ties: {out}")
    return out


def modes(ctx: Context, mem: LoRAMemory, evals: QA, tokens: int) -> dict[str, Any]:
    """Every mode on every question, the modes interleaved question by question (the order
    rotates), so a slow patch of a shared machine lands on all modes alike."""
    for mode in MODES:  # warm-up: first adapter loads, first Chroma query, lazy imports
        mem.ask(NS, evals[0][0], mode=mode, max_new_tokens=tokens)
    rows: dict[str, dict[str, list[Any]]] = {
        m: {"replies": [], "lat": [], "ctx": [], "used": [], "out": []} for m in MODES
    }
    for i, (q, _) in enumerate(evals):
        for mode in MODES[i % len(MODES) :] + MODES[: i % len(MODES)]:
            t = time.perf_counter()
            a = mem.ask(NS, q, mode=mode, max_new_tokens=tokens)
            r = rows[mode]
            r["lat"].append(time.perf_counter() - t)
            r["replies"].append(a.text)
            r["ctx"].append(a.context_tokens)
            r["used"].append(a.mode)
            r["out"].append(a.new_tokens)
    out: dict[str, Any] = {}
    for mode, r in rows.items():
        out[mode] = {
            "em": _em(evals, r["replies"]),
            "p50_ms": 1000 * median(r["lat"]),
            "p95_ms": 1000 * pct(r["lat"], 0.95),
            "prompt_tokens_mean": statistics.fmean(r["ctx"]),
            "new_tokens_mean": statistics.fmean(r["out"]),
            "ms_per_new_token": 1000 * sum(r["lat"]) / max(1, sum(r["out"])),
            "answered_as": {m: r["used"].count(m) for m in sorted(set(r["used"]))},
            "interleaved": True,
        }
        ctx.log(f"recall mode {mode}: {out[mode]}")
    return out


def batching(
    ctx: Context, mem: LoRAMemory, evals: QA, own: list[str], tokens: int
) -> dict[str, Any]:
    """Same questions, interleaved by module: one ask each vs ask_many (batches of 16)."""
    groups: dict[str, list[str]] = {}
    for (q, _), o in zip(evals, own, strict=True):
        groups.setdefault(o, []).append(q)
    order: list[str] = []
    while any(groups.values()):
        for g in groups.values():
            if g:
                order.append(g.pop())
    t0 = time.perf_counter()
    one = [mem.ask(NS, q, mode="lora", max_new_tokens=tokens) for q in order]
    one_s = time.perf_counter() - t0
    gen = mem.generator()
    timed: dict[str, float] = {}
    try:
        for impl in ("stacked", "peft", "stacked"):  # the default twice, around peft's loop
            gen.mixed_batch = impl
            t0 = time.perf_counter()
            many = mem.ask_many(NS, order, mode="lora", max_new_tokens=tokens, batch_size=16)
            timed[impl] = min(timed.get(impl, float("inf")), time.perf_counter() - t0)
    finally:
        gen.mixed_batch = "stacked"
    many_s = timed["stacked"]
    out = {
        "questions": len(order),
        "one_at_a_time_qps": len(order) / one_s,
        "ask_many_qps": len(order) / many_s,
        "ask_many_peft_loop_qps": len(order) / timed["peft"],
        "speedup": one_s / many_s,
        "speedup_peft_loop": one_s / timed["peft"],
        "same_text": sum(a.text == b.text for a, b in zip(one, many, strict=True)),
        "modules_per_batch_16": len({a.modules for a in many[:16]}),
    }
    ctx.log(f"recall batching: {out}")
    return out


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of the parts that ran (None where a part did not run)."""
    rt, t, m, b = (res.get(k) or {} for k in ("routing", "ties", "modes", "batching"))
    base = m.get("base", {}).get("p50_ms")
    return {
        "routed_top1_em": rt.get("routed_top1_em"),
        "oracle_em": rt.get("oracle_em"),
        "routing_accuracy": rt.get("routing_accuracy"),
        "top3_ties_em": t.get("top3_ties_em"),
        "all_ties_em": t.get("all_ties_em"),
        "lora_p50_vs_base": m["lora"]["p50_ms"] / base if base else None,
        "batching_speedup": b.get("speedup"),
        "batching_speedup_peft_loop": b.get("speedup_peft_loop"),
    }


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [
        f"PhoneBook ({res['facts']} facts, {res['knowledge_tokens']} tokens; "
        f"{c['data']}) consolidated into {res['modules']} r={c['rank']} modules by the capacity "
        f"planner ({res['build']['status']}, {res['build']['seconds']:.0f} s); "
        f"{c['questions']} questions."
    ]
    rt = res.get("routing")
    if rt:
        rows = [
            ["oracle routing (module holding the record)", fmt_pct(rt["oracle_em"])],
            ["**routed top-1 (default)**", f"**{fmt_pct(rt['routed_top1_em'])}**"],
        ]
        t = res.get("ties") or {}
        if "top3_ties_em" in t:
            rows += [
                [
                    f"TIES merge of the top-3 routed modules (density {t['density']})",
                    fmt_pct(t["top3_ties_em"]),
                ],
                ["TIES merge of all modules", fmt_pct(t["all_ties_em"])],
            ]
        lines += [
            "",
            f"Routing over {res['modules']} modules, {rt['questions']} questions:",
            "",
            md_table(["composition", "EM"], rows),
            "",
            "Routing accuracy (chosen == module holding the record): "
            f"**{fmt_pct(rt['routing_accuracy'])}**; median confidence "
            f"{rt['confidence_p50']:.2f}; fell back to rag: {rt['fell_back']}.",
        ]
    m = res.get("modes")
    if m:
        head = ["mode", "EM", "p50 ms", "p95 ms", "prompt tokens (mean)", "tokens out (mean)"]
        rows = [
            [
                mode,
                fmt_pct(v["em"]),
                f"{v['p50_ms']:.0f}",
                f"{v['p95_ms']:.0f}",
                f"{v['prompt_tokens_mean']:.0f}",
                f"{v['new_tokens_mean']:.1f}",
                f"{v['ms_per_new_token']:.0f}",
            ]
            for mode, v in m.items()
        ]
        lines += ["", md_table([*head, "ms / token"], rows)]
        ratio = res["summary"]["lora_p50_vs_base"]
        if ratio is not None:
            lines += [
                "",
                f"lora p50 / base p50 = **{ratio:.2f}x** (routing + adapter cost per question; "
                "target <= 1.1x).",
            ]
    b = res.get("batching")
    if b:
        lines += [
            "",
            f"Batched multi-adapter generation: `ask_many` {b['ask_many_qps']:.2f} q/s vs one "
            f"`ask` at a time {b['one_at_a_time_qps']:.2f} q/s = **{b['speedup']:.1f}x** "
            f"(questions interleaved across modules; {b['modules_per_batch_16']} modules in the "
            f"first batch of 16; {b['same_text']}/{b['questions']} identical answers). With "
            f"peft's per-module loop instead of the stacked LoRA forward: "
            f"{b['ask_many_peft_loop_qps']:.2f} q/s = {b['speedup_peft_loop']:.1f}x.",
        ]
    return "\n".join(lines)


def plot(res: dict[str, Any], ax: Any) -> None:
    s, m = res["summary"], res.get("modes") or {}
    bars = [
        ("oracle", s["oracle_em"]),
        ("routed top-1", s["routed_top1_em"]),
        ("TIES top-3", s["top3_ties_em"]),
        ("TIES all", s["all_ties_em"]),
    ]
    bars += [(f"mode {mode}", v["em"]) for mode, v in m.items()]
    bars = [(name, v) for name, v in bars if v is not None]
    ax.bar(range(len(bars)), [100 * v for _, v in bars])
    ax.set_xticks(range(len(bars)), [name for name, _ in bars], rotation=45, fontsize=7)
    ax.set_ylabel("exact match (%)")
    ax.set_title(f"recall: {res['facts']} facts in {res['modules']} modules")
