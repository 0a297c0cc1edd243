"""``conversation``: natural conversations answered before and after consolidation, by method.

Two data sets, the same turns consolidated side by side in one run by context distillation
(``mixture="distill"``, the default, with each of its two losses, and with LoRA on every layer
instead of the default top 16, ``consolidation.top_layers``) and by the previous method
(``qa+original`` with the writer's QA pairs):

- **personas**: the eight-turn Lisbon story and seeded variations (:mod:`..datasets.personas`):
  facts said in passing, a job that changes in a later session (the latest must win), an
  assistant's wrong guess (never a fact). Scored by exact answer.
- **LoCoMo** (snap-research/locomo): the first sessions of each conversation as turns (session
  dates in the text), its single-hop, multi-hop and temporal questions whose evidence lies in
  them. Scored by token F1 as the LoCoMo paper does. Read from ``--set locomo=DIR`` or
  ``../shared/datasets/locomo``; skipped (and said so) when absent.

Per mode (rag before consolidating; auto, lora, hybrid, rag after): the mean score; per method:
consolidation seconds per turn and what the gate measured. Targets (the distillation issue):
after consolidation auto >= rag before; lora >= 0.9 x rag; hybrid >= rag; latest value wins.
``lora`` and ``hybrid`` fall back to rag where no module answers (a refused module): for the
targets such an answer scores 0 in ``lora`` and counts as unmeasured in ``hybrid``, so a method
whose modules were all refused cannot meet them; the table shows both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..datasets.locomo import load_locomo, token_f1
from ..datasets.personas import lisbon_story, personas
from ._common import Context, md_table

NAME = "conversation"
METHODS: dict[str, dict[str, Any]] = {  # name -> consolidation config
    "distill": {"mixture": "distill", "distill_loss": "sequence"},
    # LoRA on every layer instead of the default top 16 (consolidation.top_layers)
    "distill-all-layers": {"mixture": "distill", "distill_loss": "sequence", "top_layers": 0},
    "distill-logits": {"mixture": "distill", "distill_loss": "logits"},
    "previous": {"mixture": "qa+original"},
}
AFTER = ("auto", "lora", "hybrid", "rag")
DEFAULT_LOCOMO = Path("../shared/datasets/locomo")


def _datasets(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """name -> items: {"ns", "turns": [turn dicts], "questions": [(q, answer, kind, stale)]}."""
    n = int(ctx.size("personas", 2, 8))
    people = [lisbon_story(), *personas(max(0, n - 1), seed=ctx.options.seed)]
    out: dict[str, list[dict[str, Any]]] = {
        "personas": [
            {
                "ns": p.name,
                "turns": [t.to_dict() for t in p.turns],
                "questions": [(q.question, q.answer, q.kind, q.stale) for q in p.questions],
            }
            for p in people
        ]
    }
    where = Path(str(ctx.size("locomo", DEFAULT_LOCOMO, DEFAULT_LOCOMO)))
    convs = int(ctx.size("conversations", 1, 8))
    sessions = int(ctx.size("sessions", 3, 3))
    if convs > 0 and where.is_dir():
        out["locomo"] = [
            {
                "ns": c.name,
                "turns": [t.to_dict() for t in c.turns],
                "questions": [(q.question, q.answer, q.category, "") for q in c.questions],
            }
            for c in load_locomo(where, sessions, limit=convs)
        ]
    elif convs > 0:
        ctx.log(f"conversation: no LoCoMo data at {where}; personas only")
    return out


def _score(dataset: str, reply: str, answer: str, stale: str) -> float:
    if dataset == "locomo":
        return token_f1(reply, answer)
    low = reply.lower()
    if stale and stale.lower() in low:
        return 0.0
    return float(answer.lower() in low)


def _ask(mem: Any, dataset: str, item: dict[str, Any], mode: str, tokens: int) -> dict[str, Any]:
    qs = item["questions"]
    t0 = time.perf_counter()
    answers = [mem.ask(item["ns"], q[0], mode=mode, max_new_tokens=tokens) for q in qs]
    seconds = time.perf_counter() - t0
    scores = [_score(dataset, a.text, q[1], q[3]) for q, a in zip(qs, answers, strict=True)]
    return {
        "scores": scores,
        "answered_as": [a.mode for a in answers],
        "replies": [a.text.strip()[:120] for a in answers],
        "seconds": seconds,
    }


def run(ctx: Context) -> dict[str, Any]:
    data = _datasets(ctx)
    tokens = int(ctx.size("new_tokens", 32, 32))
    every = ",".join(METHODS)
    wanted = str(ctx.size("methods", every, every)).split(",")
    methods = [m for m in METHODS if m in wanted]
    result: dict[str, Any] = {
        "config": {
            "datasets": {k: len(v) for k, v in data.items()},
            "turns": {k: sum(len(i["turns"]) for i in v) for k, v in data.items()},
            "questions": {k: sum(len(i["questions"]) for i in v) for k, v in data.items()},
            "methods": {m: METHODS[m] for m in methods},
            "new_tokens": tokens,
        },
        "before": {},
        "after": {},
        "consolidation": {},
    }
    for method in methods:
        mem = ctx.store(f"{NAME}-{method}")
        mem.update_config(consolidation=METHODS[method])
        for items in data.values():
            for item in items:
                mem.add_turns(item["ns"], item["turns"])
        if not result["before"]:  # the stores are identical before consolidating
            for dataset, items in data.items():
                result["before"][dataset] = {
                    "rag": [_ask(mem, dataset, it, "rag", tokens) for it in items],
                    "base": [_ask(mem, dataset, it, "base", tokens) for it in items],
                }
                rag0 = _mean(result["before"][dataset]["rag"])
                ctx.log(f"conversation {dataset} before: rag {rag0:.3f}")
        result["consolidation"][method] = {}
        result["after"][method] = {}
        for dataset, items in data.items():
            reports = []
            t0 = time.perf_counter()
            for it in items:
                [rep] = mem.consolidate(it["ns"], seed=ctx.options.seed, **ctx.train_options())
                reports.append(rep)
            seconds = time.perf_counter() - t0
            turns = sum(len(it["turns"]) for it in items)
            result["consolidation"][method][dataset] = {
                "seconds": seconds,
                "seconds_per_turn": seconds / turns if turns else 0.0,
                "statuses": [r.status for r in reports],
                "modules": [dict(m) for r in reports for m in r.modules],
                "notes": [list(r.notes) for r in reports],
            }
            ctx.log(
                f"conversation {dataset} {method}: consolidated in {seconds:.0f}s "
                f"({seconds / max(turns, 1):.1f}s/turn) {[r.status for r in reports]}"
            )
            result["after"][method][dataset] = {
                mode: [_ask(mem, dataset, it, mode, tokens) for it in items] for mode in AFTER
            }
            ctx.log(
                f"conversation {dataset} {method} after: "
                + ", ".join(
                    f"{m} {_mean(v):.3f}" for m, v in result["after"][method][dataset].items()
                )
            )
    result["summary"] = summary(result)
    return result


def _mean(runs: list[dict[str, Any]]) -> float:
    scores = [s for r in runs for s in r["scores"]]
    return sum(scores) / len(scores) if scores else 0.0


def _module_mean(runs: list[dict[str, Any]], mode: str) -> float | None:
    """Mean score counting only answers a module gave in ``mode``: ``lora`` answers rag gave
    instead score 0; for ``hybrid`` they are left out (None: no module answered at all)."""
    pairs = [
        (s, how == mode) for r in runs for s, how in zip(r["scores"], r["answered_as"], strict=True)
    ]
    if mode == "lora":
        return sum(s for s, by in pairs if by) / len(pairs) if pairs else 0.0
    mine = [s for s, by in pairs if by]
    return sum(mine) / len(mine) if mine else None


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Mean score per (dataset, phase/method, mode), and the issue's targets checked."""
    out: dict[str, Any] = {}
    for dataset, modes in res["before"].items():
        rag0 = _mean(modes["rag"])
        row: dict[str, Any] = {"rag_before": rag0, "base_before": _mean(modes["base"])}
        for method, per in res["after"].items():
            after = {m: _mean(v) for m, v in per[dataset].items()}
            lora_module = _module_mean(per[dataset]["lora"], "lora")
            hybrid_module = _module_mean(per[dataset]["hybrid"], "hybrid")
            answered = [h == "lora" for r in per[dataset]["lora"] for h in r["answered_as"]]
            row[method] = after | {
                "lora_by_module": lora_module,
                "hybrid_by_module": hybrid_module,
                "module_answered": sum(answered) / len(answered) if answered else 0.0,
                "targets": {
                    "auto >= rag before": after["auto"] >= rag0,
                    "lora >= 0.9 x rag": lora_module is not None and lora_module >= 0.9 * rag0,
                    "hybrid >= rag": hybrid_module is not None and after["hybrid"] >= after["rag"],
                },
                "seconds_per_turn": res["consolidation"][method][dataset]["seconds_per_turn"],
            }
        out[dataset] = row
    return out


def markdown(res: dict[str, Any]) -> str:
    rows = []
    for dataset, row in res["summary"].items():
        metric = "token F1" if dataset == "locomo" else "exact"
        rows.append([dataset, "before", "rag", f"{row['rag_before']:.3f}", metric, "-", "-"])
        rows.append([dataset, "before", "base", f"{row['base_before']:.3f}", metric, "-", "-"])
        for method in res["after"]:
            r = row[method]
            met = ", ".join(k for k, v in r["targets"].items() if v) or "none"
            for mode in AFTER:
                score = f"{r[mode]:.3f}"
                if mode == "lora":
                    score += f" ({r['lora_by_module']:.3f} by a module)"
                elif mode == "hybrid":
                    by = r["hybrid_by_module"]
                    score += " (no module)" if by is None else f" ({by:.3f} by a module)"
                rows.append(
                    [
                        dataset,
                        method,
                        mode,
                        score,
                        metric,
                        f"{r['seconds_per_turn']:.1f}",
                        met if mode == "auto" else "",
                    ]
                )
    return md_table(
        [
            "data",
            "phase / method",
            "mode",
            "score",
            "metric",
            "consolidation s/turn",
            "targets met",
        ],
        rows,
    )


def plot(res: dict[str, Any], ax: Any) -> None:
    labels, values = [], []
    for dataset, row in res["summary"].items():
        labels.append(f"{dataset}\nrag before")
        values.append(row["rag_before"])
        for method in res["after"]:
            for mode in ("auto", "lora", "hybrid"):
                labels.append(f"{dataset}\n{method} {mode}")
                values.append(row[method][mode])
    ax.bar(range(len(labels)), values)
    ax.set_xticks(range(len(labels)), labels, fontsize=5, rotation=60)
    ax.set_ylabel("score")
    ax.set_title("conversation: before vs after consolidation")
