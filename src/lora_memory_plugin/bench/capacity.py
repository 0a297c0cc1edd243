"""``capacity``: exact recall vs knowledge tokens per LoRA rank (the paper's Figures 1-2), and
tokens stored per LoRA parameter (its Eq. 1), on the configured base model.

Each point trains one adapter on ``n`` PhoneBook-style facts with the store's learning rate until
teacher-forced recall is 1.0 or the epoch budget runs out (``capacity_point``, the routine
``lora-memory calibrate`` uses), then scores greedy answers. Sizes per rank grow until recall has
collapsed (two points below 50%; ``--quick``: one), so the curve shows the plateau and the fall.
"""

from __future__ import annotations

from typing import Any

from ..consolidation.capacity import capacity_point
from ._common import Context, fmt_pct, md_table

NAME = "capacity"
TARGET = 0.95
FULL_EPOCHS = 40  # epochs a point may train at full size; quick runs train fewer


def run(ctx: Context) -> dict[str, Any]:
    ranks = ctx.size("ranks", (2, 16), (2, 4, 8, 16, 32, 64))
    sizes = ctx.size("facts", (3, 6), (24, 48, 96, 192, 384, 768, 1536))
    epochs = ctx.size("max_epochs", 10, FULL_EPOCHS)
    give_up = int(ctx.size("stop_after_low", 1, 2))  # points below 50% before the next rank
    mem = ctx.store(NAME)
    gen = mem.generator()
    points: list[dict[str, Any]] = []
    for rank in ranks:
        low = 0
        for n in sizes:
            p = capacity_point(
                gen,
                int(rank),
                int(n),
                lr=mem.config.consolidation.lr_for("qa"),
                max_epochs=int(epochs),
                seed=ctx.options.seed,
                device=mem.config.models.device,
                system=mem.config.generation.system_prompt,
            )
            row = {
                "rank": p.rank,
                "facts": p.facts,
                "tokens": p.tokens,
                "em": p.recall,
                "params": p.params,
                "steps": p.steps,
                "seconds": p.seconds,
                "stopped_because": p.stopped_because,
            }
            points.append(row)
            ctx.log(f"capacity r={rank} {n} facts ({p.tokens} tokens): EM {fmt_pct(p.recall)}")
            low = low + 1 if p.recall < 0.5 else 0
            if low >= give_up:  # recall only falls with more facts: the rest would fail too
                break
    capacity = {}
    for rank in ranks:
        held = [p for p in points if p["rank"] == rank and p["em"] >= TARGET]
        if held:
            best = max(held, key=lambda p: p["tokens"])
            capacity[str(rank)] = {
                "tokens": best["tokens"],
                "params": best["params"],
                "tokens_per_kparam": 1000 * best["tokens"] / best["params"],
            }
    return {
        "config": {"ranks": list(ranks), "facts": list(sizes), "max_epochs": epochs},
        "target": TARGET,
        "points": points,
        "capacity": capacity,
    }


def markdown(res: dict[str, Any]) -> str:
    rows = [
        [p["rank"], p["facts"], p["tokens"], fmt_pct(p["em"]), p["steps"], f"{p['seconds']:.0f}"]
        for p in res["points"]
    ]
    out = md_table(["rank", "facts", "knowledge tokens", "EM", "steps", "train s"], rows)
    cap = [
        [r, c["tokens"], c["params"], f"{c['tokens_per_kparam']:.2f}"]
        for r, c in res["capacity"].items()
    ]
    if cap:
        out += "\n\nCapacity (largest size at >= 95% EM) and efficiency (Eq. 1):\n\n"
        out += md_table(["rank", "tokens held", "LoRA params", "tokens / 1k params"], cap)
    return out


def plot(res: dict[str, Any], ax: Any) -> None:
    for rank in res["config"]["ranks"]:
        pts = [p for p in res["points"] if p["rank"] == rank]
        ax.plot([p["tokens"] for p in pts], [100 * p["em"] for p in pts], "o-", label=f"r={rank}")
    ax.set_xscale("log")
    ax.set_xlabel("knowledge tokens in the module")
    ax.set_ylabel("exact match (%)")
    ax.set_title("capacity: EM vs knowledge tokens per rank")
    ax.legend()
