"""``consolidation``: time to target recall, our trainer's defaults vs the paper's recipe.

The same PhoneBook facts (the paper's 1K slice with ``--data``, else generated) are trained into
one LoRA twice, one after the other on the same machine: with the store's defaults (lr, batch)
and with the paper's recipe (alpha = r, dropout 0.1, lr 5e-5, batch 8, up to 1,500 steps), the
recipe given ``recipe_budget`` times our wall time. Recall is teacher-forced exact recall after
every epoch (the trainer's own check); the final adapters are also scored by greedy answers.

A tuning probe: ``--set consolidation.train=rank=8,lr=2e-3,max_seconds=600`` (any
``TrainConfig`` fields) changes our run's settings; the recipe's run keeps the paper's.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from ..consolidation.capacity import generated_recall
from ..consolidation.data import Probe
from ..consolidation.engine import probe_exact_match
from ..consolidation.trainer import Example, TrainConfig, train_lora
from ..errors import InvalidInputError
from ._common import Context, fmt_pct, load_phonebook, md_table

NAME = "consolidation"


def _train(ctx: Context, mem: Any, facts: list[Any], config: Any) -> dict[str, Any]:
    system = mem.config.generation.system_prompt
    examples = [Example.qa(q, a, system=system) for q, a in facts]
    gen = mem.generator()
    res = train_lora(gen.path, examples, config, progress=False)
    probes = [Probe(q, a, f"pb-{i}") for i, (q, a) in enumerate(facts)]
    return {
        "steps": res.steps,
        "epochs": res.epochs,
        "seconds": res.seconds,
        "tokens_per_second": res.tokens_per_second,
        "stopped_because": res.stopped_because,
        "history": [list(h) for h in res.recall_history],
        "greedy_em": generated_recall(gen, res, probes, system, probe_exact_match),
    }


def train_overrides(text: str) -> dict[str, Any]:
    """``rank=8,lr=2e-3`` (``--set consolidation.train=...``) -> TrainConfig fields, typed."""
    kinds = {f.name: str(f.type) for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in kinds:
            raise InvalidInputError(f"--set train takes TrainConfig NAME=VALUE, got {part!r}")
        kind = kinds[key]
        try:
            if value.lower() == "none" and "None" in kind:
                out[key] = None
            elif kind.startswith("bool"):
                out[key] = value.lower() in ("1", "true", "yes")
            elif kind.startswith(("int", "float")):
                out[key] = (int if kind.startswith("int") else float)(value)
            else:
                out[key] = value
        except ValueError:
            raise InvalidInputError(f"--set train: {key} takes {kind}, got {value!r}") from None
    return out


def time_to(history: list[list[float]], target: float) -> float | None:
    return next((s for _, s, r in history if r >= target), None)


def run(ctx: Context) -> dict[str, Any]:
    n = int(ctx.size("facts", 2, 48))
    budget = float(ctx.size("recipe_budget", 1.0, 5.0))
    target = 0.99
    facts = load_phonebook(ctx, n)
    mem = ctx.store(NAME)
    rank = 16
    c = mem.config.consolidation
    train = train_overrides(str(ctx.size("train", "", "")))
    ours_cfg = TrainConfig(
        rank=rank,
        lr=c.lr,
        seed=ctx.options.seed,
        device=mem.config.models.device,
        **ctx.train_options(),
    )
    ours_cfg = replace(ours_cfg, **train)  # --set consolidation.train=...: a tuning probe
    ctx.log(f"consolidation: ours on {n} facts (r={ours_cfg.rank}, lr={ours_cfg.lr}, {train})")
    ours = _train(ctx, mem, facts, ours_cfg)
    recipe_cfg = TrainConfig(
        rank=rank,
        alpha=rank,
        dropout=0.1,
        lr=5e-5,
        batch_size=8,
        max_steps=ctx.train_options().get("max_steps", 1500),
        max_seconds=budget * ours["seconds"],
        seed=ctx.options.seed,
        device=mem.config.models.device,
    )
    ctx.log(f"consolidation: paper recipe, budget {recipe_cfg.max_seconds:.0f}s")
    recipe = _train(ctx, mem, facts, recipe_cfg)
    out: dict[str, Any] = {
        "config": {
            "facts": n,
            "rank": rank,
            "target": target,
            "recipe_budget": budget,
            "train": train,
        },
        "ours": ours | {"time_to_target": time_to(ours["history"], target)},
        "recipe": recipe | {"time_to_target": time_to(recipe["history"], target)},
    }
    t_ours, t_rec = out["ours"]["time_to_target"], out["recipe"]["time_to_target"]
    out["speedup"] = (
        t_rec / t_ours if t_ours and t_rec else None
    )  # None: the recipe did not get there
    out["speedup_lower_bound"] = recipe["seconds"] / t_ours if t_ours and not t_rec else None
    return out


def markdown(res: dict[str, Any]) -> str:
    def row(name: str, r: dict[str, Any]) -> list[Any]:
        t = r["time_to_target"]
        last = r["history"][-1][2] if r["history"] else None
        return [
            name,
            "-" if t is None else f"{t:.0f}",
            r["steps"],
            f"{r['seconds']:.0f}",
            fmt_pct(last),
            fmt_pct(r["greedy_em"]),
        ]

    head = ["trainer", "s to 99% recall", "steps", "train s", "final recall", "greedy EM"]
    label = ", ".join(f"{k}={v}" for k, v in res["config"].get("train", {}).items())
    ours = f"ours ({label or 'store defaults'})"
    out = md_table(head, [row(ours, res["ours"]), row("paper recipe", res["recipe"])])
    if res.get("speedup"):
        out += f"\n\nOurs reaches the target {res['speedup']:.1f}x faster."
    elif res.get("speedup_lower_bound"):
        out += (
            f"\n\nThe recipe did not reach the target in its budget: ours is at least "
            f"{res['speedup_lower_bound']:.1f}x faster."
        )
    return out


def plot(res: dict[str, Any], ax: Any) -> None:
    for name in ("ours", "recipe"):
        h = res[name]["history"]
        ax.plot([s for _, s, _ in h], [100 * r for _, _, r in h], "o-", label=name)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("teacher-forced recall (%)")
    ax.set_title("consolidation: time to recall")
    ax.legend()
