"""``lora-memory bench``: the paper's core experiments through the public API, side by side with
RAG and ICL. Suites: capacity, modes, consolidation, write, updates, multimodule (the default
set), and conversation, mixtures, recall, serve (asked for by name).

Each suite writes ``<out>/bench[-quick]-<suite>.json`` (config, environment, every raw number) and
``.png`` (its plot); the run writes ``<out>/bench[-quick].md`` with every table and the paper's
qualitative findings checked against the numbers (holds / does not hold / not shown).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import InvalidInputError
from . import (
    capacity,
    consolidation,
    conversation,
    mixtures,
    modes,
    multimodule,
    recall,
    serve,
    updates,
    write,
)
from ._common import BenchOptions, Context
from ._env import base_environment, device_name

__all__ = ["DEFAULT_SUITES", "SUITES", "BenchOptions", "run_bench"]

SUITES: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        write,
        capacity,
        consolidation,
        modes,
        updates,
        multimodule,
        conversation,
        mixtures,
        recall,
        serve,
    )
}
# `lora-memory bench` with no suite named (and `make bench`): the paper's experiments, < 10
# minutes together at --quick on 2 cores. `conversation` consolidates whole conversations twice
# (two methods side by side), `mixtures` once per mixture, and `recall` (~2 min more) asks
# every question in five modes, and `serve` loads the memory service (not a paper experiment):
# these are asked for by name.
DEFAULT_SUITES = tuple(
    name for name in SUITES if name not in ("conversation", "mixtures", "recall", "serve")
)
PACKAGES = ("torch", "transformers", "peft", "chromadb", "lora-memory-plugin")


def _stem(options: BenchOptions) -> str:
    return "bench-quick" if options.quick else "bench"


def run_bench(suites: Sequence[str] | None, options: BenchOptions) -> dict[str, Any]:
    """Run ``suites`` (:data:`DEFAULT_SUITES` when None or empty) and write their results under
    ``options.out``."""
    names = list(suites or DEFAULT_SUITES)
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise InvalidInputError(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    if options.data is not None and not Path(options.data).is_dir():
        raise InvalidInputError(f"--data {options.data} is not a directory")
    options.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(options)
    env = base_environment(PACKAGES) | {"device": device_name(options.device)}
    results: dict[str, Any] = {}
    t_run = time.perf_counter()
    try:
        for name in names:
            ctx.log(f"suite {name} ...")
            t0 = time.perf_counter()
            ctx.suite = name
            res = SUITES[name].run(ctx)
            res["seconds"] = time.perf_counter() - t0
            res["quick"] = options.quick
            res["environment"] = env
            results[name] = res
            path = options.out / f"{_stem(options)}-{name}.json"
            path.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
            _plot(SUITES[name], res, path.with_suffix(".png"))
            ctx.log(f"suite {name}: {res['seconds']:.0f}s -> {path}")
    finally:
        ctx.close()
    wall = time.perf_counter() - t_run
    _write_markdown(options, results, env, wall)
    return {"suites": results, "seconds": wall, "environment": env}


def _plot(suite: ModuleType, res: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib  # noqa: PLC0415 (optional `bench` extra, heavy)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 (after use("Agg"))
    except ImportError:  # the `bench` extra is not installed: JSON and Markdown only
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    suite.plot(res, ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def findings(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The paper's qualitative findings, each checked against this run: (finding, verdict, why)."""
    out = []
    cap = results.get("capacity")
    if cap:
        em = {(p["rank"], p["facts"]): p["em"] for p in cap["points"]}
        ranks = cap["config"]["ranks"]
        pairs = [
            (em[lo, n], em[hi, n])
            for lo, hi in itertools.pairwise(ranks)
            for n in cap["config"]["facts"]
            if (lo, n) in em and (hi, n) in em
        ]
        rises = bool(pairs) and all(b >= a for a, b in pairs) and any(b > a for a, b in pairs)
        why = "EM per (rank, facts): " + ", ".join(f"r{r}/{n}: {v:.0%}" for (r, n), v in em.items())
        epochs = cap["config"]["max_epochs"]
        budget = epochs < capacity.FULL_EPOCHS  # a fall may be under-training, not capacity
        if budget:
            why += f" (each point trained at most {epochs} epochs)"
        verdict = ("holds within the epoch budget" if budget else "holds") if rises else "not shown"
        out.append(("recall grows with rank", verdict, why))
        held = {int(r): c["tokens"] for r, c in cap["capacity"].items()}
        collapsed = [
            r
            for r in ranks
            if r in held
            and any(
                p["rank"] == r and p["tokens"] > held[r] and p["em"] < 0.5 for p in cap["points"]
            )
        ]
        why = (
            f"tokens held at >= 95% EM: {held or 'no rank reached 95%'}; "
            f"below 50% past that at ranks: {collapsed or 'none'}"
        )
        verdict = "holds" if collapsed else "not shown"
        if collapsed and budget:
            verdict = "not shown"
            why += (
                f"; but at {epochs} epochs a point may fail from too little training, so this "
                "fall is not evidence of capacity "
                f"(full runs train {capacity.FULL_EPOCHS} epochs a point)"
            )
        out.append(("at a fixed rank, recall collapses past its capacity", verdict, why))
    m = results.get("modes")
    if m:
        h, r = m["modes"]["hybrid"]["pair_em"], m["modes"]["rag"]["pair_em"]
        why = f"pair-question EM: hybrid {h:.1%}, rag {r:.1%}"
        verdict = "not shown" if h == r == 0 else "holds" if h >= r else "does not hold"
        out.append(("hybrid >= rag on multi-fact questions", verdict, why))
    mm = results.get("multimodule")
    if mm:
        why = (
            f"oracle {mm['oracle_em']:.1%}, routed {mm['routed_top1_em']:.1%}, one big module "
            f"{mm['one_big_module_em']:.1%}, routing accuracy {mm['routing_accuracy']:.1%}"
        )
        ok = mm["routed_top1_em"] >= mm["one_big_module_em"]
        out.append(
            ("many small routed modules >= one big module", "holds" if ok else "does not hold", why)
        )
    c = results.get("consolidation")
    if c:
        t_o, t_r = c["ours"]["time_to_target"], c["recipe"]["time_to_target"]
        proxy = str(c["recipe"].get("implementation", "")).startswith("proxy")
        what = "the paper recipe"
        if proxy:
            what = "the paper's hyperparameters on our trainer (a proxy)"
        why = f"seconds to 99% recall: ours {_s(t_o)}, {'proxy' if proxy else 'recipe'} {_s(t_r)}"
        ok = t_o is not None and (t_r is None or t_o < t_r)
        out.append(
            (
                f"our consolidation reaches the target faster than {what}",
                "holds" if ok else "does not hold",
                why,
            )
        )
    u = results.get("updates")
    if u:
        cur = u["after_consolidation"]["lora"]["current"]
        stale = u["after_consolidation"]["lora"]["stale"]
        why = f"lora mode after re-consolidation: latest {cur:.1%}, stale {stale:.1%}"
        out.append(
            (
                "after an update is consolidated, the latest value wins",
                "holds" if cur > stale else "does not hold",
                why,
            )
        )
    return out


def _s(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.0f}"


def _write_markdown(
    options: BenchOptions, results: dict[str, Any], env: dict[str, Any], wall: float
) -> None:
    stem = _stem(options)
    lines = [
        f"# lora-memory bench{' --quick' if options.quick else ''}",
        "",
        f"Machine: {env['cpu_model']} ({env['cpu_count']} cores), device {env['device']}; "
        f"torch {env['packages']['torch']}, transformers {env['packages']['transformers']}, "
        f"peft {env['packages']['peft']}; commit {env['git_commit'][:10]}; {env['date']}. "
        f"Wall time {wall / 60:.1f} min.",
        "",
        "## Findings of the paper, checked on this run",
        "",
        "| finding | verdict | numbers |",
        "|---|---|---|",
    ]
    lines += [f"| {f} | {v} | {w} |" for f, v, w in findings(results)]
    for name, res in results.items():
        lines += [
            "",
            f"## {name} ({res['seconds']:.0f} s)",
            "",
            (SUITES[name].__doc__ or "").strip().split("\n\n")[0],
            "",
        ]
        lines += [SUITES[name].markdown(res), "", f"![{name}]({stem}-{name}.png)"]
    (options.out / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
