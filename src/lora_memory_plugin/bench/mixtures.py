"""``mixtures``: which synthetic-data mixture makes the base model recall conversation facts best,
each mixture consolidated into a fresh store by the local writer and asked held-out questions.

The paper (arXiv 2603.01097) ranks training formats QA > summary > rewrite > original and finds
mixtures best, with GPT-4.1 writing the data for 8B models. Here the base model writes its own
data (``writer="local"``), so we measure instead of assuming:

- data: ``facts`` user turns that state facts in passing (:mod:`..datasets.conversations`), each
  with a held-out question worded differently from the turn;
- per mixture: a fresh store, the turns added, ``consolidate(ns, mixture=..., writer="local")``
  with the gate's target at ~0 (the module commits whatever it learned), then every held-out
  question through ``ask(mode="lora")``; exact match = the answer string appears in the reply
  and a module gave it (a rag fallback is a miss). ``base`` mode (no memory) is the floor,
  ``rag`` the buffer's level.

Sizes: ``facts`` (quick 3, full 24) and ``mixtures`` (quick ``qa``, full
``original,rewrite,summary,qa,qa+original,all,distill,distill+original``: the former script's
six and the context distillation that is the default now), e.g. ``--set mixtures=qa,all``;
``--set max_steps=N`` caps each consolidation. Same seed and step budget for every mixture.
"""

from __future__ import annotations

import time
from typing import Any

from ..datasets.conversations import ConversationFact, conversation_facts
from ..errors import InvalidInputError
from ._common import Context, hit, md_table

NAME = "mixtures"
NS = "mixtures"
FULL_MIXTURES = "original,rewrite,summary,qa,qa+original,all,distill,distill+original"
QUICK_MIXTURES = "qa"
NEW_TOKENS = 16


def _turns(facts: list[ConversationFact]) -> list[dict[str, Any]]:
    return [{"content": f.turn, "role": "user", "session_id": "s1"} for f in facts]


def reference_modes(ctx: Context, facts: list[ConversationFact]) -> dict[str, float]:
    """Exact match of ``base`` (no memory) and ``rag`` (the buffer) on the held-out questions."""
    mem = ctx.store(f"{NAME}-reference")
    mem.add_turns(NS, _turns(facts))
    out = {}
    for mode in ("base", "rag"):
        hits = sum(
            hit(f.answer, mem.ask(NS, f.question, mode=mode, max_new_tokens=NEW_TOKENS).text)
            for f in facts
        )
        out[mode] = hits / len(facts) if facts else 0.0
    return out


def run_mixture(
    ctx: Context, i: int, mixture: str, facts: list[ConversationFact]
) -> dict[str, Any]:
    mem = ctx.store(f"{NAME}-{i}-{mixture}")
    mem.add_turns(NS, _turns(facts))
    t0 = time.perf_counter()
    [report] = mem.consolidate(
        NS,
        mixture=mixture,
        writer="local",
        target=1e-6,
        seed=ctx.options.seed,
        progress=False,
        **ctx.train_options(),
    )
    wall = time.perf_counter() - t0
    answers = []
    for f in facts:
        a = mem.ask(NS, f.question, mode="lora", max_new_tokens=NEW_TOKENS)
        answers.append({"q": f.question, "expected": f.answer, "reply": a.text, "mode": a.mode})
    em = sum(hit(x["expected"], x["reply"]) and x["mode"] == "lora" for x in answers)
    module = report.modules[0] if report.modules else {}
    return {
        "mixture": mixture,
        "status": report.status,
        "held_out_em": em / len(facts) if facts else 0.0,
        "held_out_hits": em,
        "probe_recall": report.probe_recall,
        "drift": report.drift,
        "steps": report.steps,
        "train_seconds": module.get("seconds", 0.0),
        "consolidate_seconds": wall,
        "train_tokens": report.train_tokens,
        "synthetic": module.get("synthetic", {}),
        "notes": list(report.notes),
        "answers": answers,
    }


def run(ctx: Context) -> dict[str, Any]:
    n = int(ctx.size("facts", 3, 24))
    wanted = str(ctx.size("mixtures", QUICK_MIXTURES, FULL_MIXTURES))
    mixtures = [m.strip() for m in wanted.split(",") if m.strip()]
    if not mixtures or n < 1:
        raise InvalidInputError(f"mixtures needs facts >= 1 and a mixture, got {n} and {wanted!r}")
    facts = conversation_facts(n, seed=ctx.options.seed)
    result: dict[str, Any] = {
        "config": {
            "facts": n,
            "mixtures": mixtures,
            "new_tokens": NEW_TOKENS,
            **ctx.train_options(),
        },
        "facts": len(facts),
        "seed": ctx.options.seed,
        "runs": [],
    }
    result["reference"] = reference_modes(ctx, facts)
    ctx.log(f"mixtures: {n} facts, reference {result['reference']}")
    for i, mixture in enumerate(mixtures):
        r = run_mixture(ctx, i, mixture, facts)
        ctx.log(
            f"mixtures {mixture}: held-out EM {r['held_out_em']:.0%}, probe {r['probe_recall']}, "
            f"{r['steps']} steps, {r['consolidate_seconds']:.0f}s ({r['status']})"
        )
        result["runs"].append(r)
    best = max(result["runs"], key=lambda r: (r["held_out_em"], -r["consolidate_seconds"]))
    result["best"] = best["mixture"]
    return result


def _count(synthetic: dict[str, Any], key: str) -> int:
    return sum(v.get(key, 0) for v in synthetic.values() if isinstance(v, dict))


def markdown(res: dict[str, Any]) -> str:
    rows = []
    for r in res["runs"]:
        probe = "n/a" if r["probe_recall"] is None else f"{r['probe_recall']:.0%}"
        drift = "n/a" if r["drift"] is None else f"{r['drift']:+.1%}"
        rows.append(
            [
                r["mixture"],
                f"**{r['held_out_em']:.0%}** ({r['held_out_hits']}/{res['facts']})",
                probe,
                f"{_count(r['synthetic'], 'kept')} / {_count(r['synthetic'], 'made')}",
                r["steps"],
                f"{r['train_seconds']:.0f}",
                f"{r['consolidate_seconds']:.0f}",
                drift,
            ]
        )
    ref = res["reference"]
    blank = [""] * 6
    rows.append(["*(no memory: base mode)*", f"{ref['base']:.0%}", *blank])
    rows.append(["*(buffer: rag mode)*", f"{ref['rag']:.0%}", *blank])
    head = [
        "training data",
        "held-out EM",
        "probe recall",
        "examples kept / made",
        "steps",
        "train s",
        "consolidate s",
        "drift",
    ]
    best = next(r for r in res["runs"] if r["mixture"] == res["best"])
    return md_table(head, rows) + f"\n\nBest: **{best['mixture']}** ({best['held_out_em']:.0%})."


def plot(res: dict[str, Any], ax: Any) -> None:
    names = [r["mixture"] for r in res["runs"]]
    ax.bar(range(len(names)), [100 * r["held_out_em"] for r in res["runs"]])
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30)
    ax.axhline(100 * res["reference"]["rag"], color="tab:green", ls="--", label="rag (buffer)")
    ax.axhline(100 * res["reference"]["base"], color="tab:gray", ls=":", label="base (none)")
    ax.set_ylabel("held-out exact match (%)")
    ax.set_title("mixtures: lora-mode EM per training-data mixture")
    ax.legend()
