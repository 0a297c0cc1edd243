"""``modes``: lora / hybrid / rag / icl / base on the same questions, single- and multi-fact.

Multi-fact profiles (several facts per person, one record each) are consolidated through the
public API; then every mode answers every single-fact question and every *pair* question (two
facts of one person at once; both values must appear). Accuracy and context tokens come from
batched ``ask_many``; latency from single ``ask`` calls with the modes interleaved question by
question, so load on the machine hits every mode alike.
"""

from __future__ import annotations

import time
from typing import Any

from ..datasets.profiles import profiles
from ._common import Context, fmt_pct, hit, md_table, median, pct, rate

NAME = "modes"
NS = "profiles"
MODES = ("lora", "hybrid", "rag", "icl", "base")


def run(ctx: Context) -> dict[str, Any]:
    n = int(ctx.size("people", 2, 32))
    per = int(ctx.size("facts_per", 2, 3))
    latency_qs = int(ctx.size("latency_questions", 2, 20))
    tokens = int(ctx.size("new_tokens", 20, 32))
    people = profiles(n, facts_per=per, seed=ctx.options.seed)
    mem = ctx.store(NAME)
    mem.add_turns(NS, [{"content": t, "role": "user"} for p in people for t in p.texts()])
    t0 = time.perf_counter()
    [report] = mem.consolidate(NS, seed=ctx.options.seed, **ctx.train_options())
    ctx.log(
        f"modes: {report.status}, {len(report.modules)} module(s), {time.perf_counter() - t0:.0f}s"
    )
    single = [qa for p in people for qa in p.qa()]
    pairs = [pq for p in people for pq in p.pair_questions()]
    out: dict[str, Any] = {
        "config": {"people": n, "facts_per": per, "new_tokens": tokens},
        "records": sum(len(p.facts) for p in people),
        "consolidation": report.status,
        "modes": {},
    }
    for mode in MODES:
        t0 = time.perf_counter()
        a1 = mem.ask_many(NS, [q for q, _ in single], mode=mode, max_new_tokens=tokens)
        a2 = mem.ask_many(NS, [q for q, _ in pairs], mode=mode, max_new_tokens=tokens)
        wall = time.perf_counter() - t0
        answers = a1 + a2
        out["modes"][mode] = {
            "single_em": rate([hit(a, r.text) for (_, a), r in zip(single, a1, strict=True)]),
            "pair_em": rate([hit(a, r.text) for (_, a), r in zip(pairs, a2, strict=True)]),
            "context_tokens_mean": sum(r.context_tokens for r in answers) / len(answers),
            "batched_qps": len(answers) / wall,
            "answered_as": sorted({r.mode for r in answers}),
        }
        ctx.log(f"modes {mode}: {out['modes'][mode]}")
    lat: dict[str, list[float]] = {m: [] for m in MODES}
    made: dict[str, list[int]] = {m: [] for m in MODES}
    for q, _ in single[:latency_qs]:
        for mode in MODES:
            t0 = time.perf_counter()
            a = mem.ask(NS, q, mode=mode, max_new_tokens=tokens)
            lat[mode].append(time.perf_counter() - t0)
            made[mode].append(a.new_tokens)
    for mode in MODES:
        r = out["modes"][mode]
        r["p50_ms"] = 1000 * median(lat[mode])
        r["p95_ms"] = 1000 * pct(lat[mode], 0.95)
        r["new_tokens_mean"] = sum(made[mode]) / len(made[mode])
        r["ms_per_new_token"] = 1000 * sum(lat[mode]) / max(1, sum(made[mode]))
    base = out["modes"]["base"]["p50_ms"] or 1.0
    for mode in MODES:
        out["modes"][mode]["p50_vs_base"] = out["modes"][mode]["p50_ms"] / base
    return out


def markdown(res: dict[str, Any]) -> str:
    rows = [
        [
            m,
            fmt_pct(r["single_em"]),
            fmt_pct(r["pair_em"]),
            f"{r['p50_ms']:.0f}",
            f"{r['p50_vs_base']:.2f}x",
            f"{r['new_tokens_mean']:.1f}",
            f"{r['ms_per_new_token']:.0f}",
            f"{r['context_tokens_mean']:.0f}",
            f"{r['batched_qps']:.2f}",
        ]
        for m, r in res["modes"].items()
    ]
    head = [
        "mode",
        "single-fact EM",
        "pair EM",
        "p50 ms",
        "p50 / base",
        "tokens out",
        "ms / token out",
        "prompt tokens",
        "q/s batched",
    ]
    return md_table(head, rows)


def plot(res: dict[str, Any], ax: Any) -> None:
    modes = list(res["modes"])
    xs = range(len(modes))
    ax.bar(
        [x - 0.2 for x in xs],
        [100 * res["modes"][m]["single_em"] for m in modes],
        0.4,
        label="single-fact",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [100 * res["modes"][m]["pair_em"] for m in modes],
        0.4,
        label="pair (multi-fact)",
    )
    ax.set_xticks(list(xs), modes)
    ax.set_ylabel("exact match (%)")
    ax.set_title("modes: accuracy")
    ax.legend()
