"""Recall across a many-module namespace: routing, composition, modes, latency, batching.

PhoneBook facts (the paper's slices, ``--data``) are consolidated through the public API into
``--modules`` modules (capacity is set so the planner splits them), then the slice's eval
questions are asked:

- **routing**: routed top-1 (``ask_many`` in ``lora`` mode) vs oracle routing (each question
  with the module that holds its record) vs a TIES merge (peft ``add_weighted_adapter``,
  ``combination_type="ties"``) of the top-3 routed modules and of all modules; routing accuracy
  on its own (chosen module == the module holding the question's record);
- **modes**: lora / hybrid / rag / icl / base on the same questions, the modes interleaved
  question by question: exact match, p50/p95 latency of single ``ask`` calls, prompt tokens,
  tokens out and ms per token out;
- **batching**: ``ask_many`` (one mixed multi-adapter batch per 16 questions; the stacked LoRA
  forward and peft's per-module loop) vs one ``ask`` at a time, questions ordered so
  consecutive ones use different modules (an adapter switch each).

Exact match: the expected number appears in the reply. The store is kept in ``--store`` so a
re-run skips training when its modules are there. Writes ``<out>/recall.{json,md}``.

    .venv/bin/python benchmarks/recall.py --slice 2K --modules 4      # CPU default
    .venv/bin/python benchmarks/recall.py --slice 8K --modules 8      # GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import REPO_ROOT, base_environment

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin.bench._common import hit
from lora_memory_plugin.consolidation.data import parse_qa
from lora_memory_plugin.registry import modules as registry

NS = "phonebook"
MODES = ("lora", "hybrid", "rag", "icl", "base")


def log(msg: str) -> None:
    print(f"[recall {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load(data: Path, slice_: str) -> tuple[list[str], list[dict[str, str]]]:
    with (data / f"phonebook_qa_{slice_}.csv").open(newline="", encoding="utf-8") as f:
        texts = [row["text"].strip() for row in csv.DictReader(f)]
    evals = json.loads((data / f"phonebook_eval_qa_{slice_}.json").read_text(encoding="utf-8"))
    return texts, evals


def build_store(args: argparse.Namespace, texts: list[str]) -> tuple[LoRAMemory, dict[str, Any]]:
    mem = LoRAMemory.open(args.store)
    if mem.buffer.has_namespace(NS) and mem.modules(NS) and not mem.count(NS, status="buffered"):
        log(f"reusing {len(mem.modules(NS))} modules in {args.store}")
        return mem, {"reused": True}
    gen = mem.generator()
    tokens = sum(gen.count_tokens(t) for t in texts)
    per_module = int(tokens / args.modules / mem.config.consolidation.capacity_margin) + 8
    mem.update_config(consolidation={"capacity_tokens": {str(args.rank): per_module}})
    mem.add_turns(NS, [{"content": t, "role": "user"} for t in texts])
    log(f"{len(texts)} facts, {tokens} tokens -> capacity {per_module}/module at r={args.rank}")
    t0 = time.perf_counter()
    [report] = mem.consolidate(NS, rank=args.rank, seed=args.seed, progress=True)
    wall = time.perf_counter() - t0
    log(f"consolidate: {report.status}, {len(report.modules)} modules, {wall:.0f}s")
    return mem, {
        "reused": False,
        "status": report.status,
        "seconds": wall,
        "steps": report.steps,
        "probe_recall": report.probe_recall,
        "modules": [dict(m) for m in report.modules],
        "notes": list(report.notes),
    }


def owners(mem: LoRAMemory, evals: list[dict[str, str]]) -> list[str]:
    """The module holding each eval question's record (matched by question text)."""
    by_q: dict[str, str] = {}
    for r in mem.get(NS):
        qa = parse_qa(r.text)
        if qa is not None:
            by_q[qa[0].rstrip("?").strip().lower()] = str(r.metadata.get("module_id", ""))
    return [by_q.get(e["question"].rstrip("?").strip().lower(), "") for e in evals]


def em(evals: list[dict[str, str]], replies: list[str]) -> float:
    return sum(hit(e["answer"], r) for e, r in zip(evals, replies, strict=True)) / len(evals)


def pct(xs: list[float], q: float) -> float:
    return float(statistics.quantiles(xs, n=100)[int(q) - 1]) if len(xs) > 1 else xs[0]


def bench_routing(
    mem: LoRAMemory, evals: list[dict[str, str]], own: list[str], new_tokens: int
) -> dict[str, Any]:
    qs = [e["question"] for e in evals]
    t0 = time.perf_counter()
    routed = mem.ask_many(NS, qs, mode="lora", max_new_tokens=new_tokens)
    routed_s = time.perf_counter() - t0
    chosen = [a.modules[0] if a.modules else "" for a in routed]
    root = registry.modules_root(mem.path, NS)
    oracle = mem.generator().chat_routed(
        [_messages(mem, q) for q in qs],
        [(m, root / m) if m else None for m in own],
        max_new_tokens=new_tokens,
    )
    out = {
        "questions": len(qs),
        "routing_accuracy": sum(c == o for c, o in zip(chosen, own, strict=True)) / len(qs),
        "routed_top1_em": em(evals, [a.text for a in routed]),
        "oracle_em": em(evals, [g.text for g in oracle]),
        "routed_seconds": routed_s,
        "confidence_p50": statistics.median(a.confidence for a in routed),
        "fell_back": sum(a.mode != "lora" for a in routed),
        "wrong_routes": [
            {"question": q, "chosen": c, "owner": o}
            for q, c, o in zip(qs, chosen, own, strict=True)
            if c != o
        ][:10],
    }
    log(f"routing: {json.dumps({k: v for k, v in out.items() if k != 'wrong_routes'})}")
    return out


def _messages(mem: LoRAMemory, question: str) -> list[dict[str, str]]:
    from lora_memory_plugin.generation.prompts import build_messages

    return build_messages(mem.config.generation.system_prompt, question, [])


def bench_ties(
    mem: LoRAMemory, evals: list[dict[str, str]], new_tokens: int, density: float
) -> dict[str, Any]:
    """TIES merges through peft on a separate copy of the base model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_memory_plugin.generation.backend import resolve_base_model

    gen = mem.generator()
    root = registry.modules_root(mem.path, NS)
    mods = [m.module_id for m in mem.modules(NS)]
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("default"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(root / mods[0]), adapter_name=mods[0])
    for m in mods[1:]:
        model.load_adapter(str(root / m), adapter_name=m)
    model.eval()
    tok = gen.tokenizer
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
        ids = tok(
            gen.render(_messages(mem, question)), return_tensors="pt", add_special_tokens=False
        )
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)
        return str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))

    top3, all_ = [], []
    t0 = time.perf_counter()
    name_all = merged_name(tuple(mods))
    for i, e in enumerate(evals):
        d = mem.route(NS, e["question"])
        names = tuple(sorted(c.module_id for c in d.candidates[:3]))
        if len(names) < 2:
            names = tuple(sorted(mods[:3]))
        top3.append(answer(e["question"], merged_name(names)))
        all_.append(answer(e["question"], name_all))
        if (i + 1) % 24 == 0:
            log(f"ties: {i + 1}/{len(evals)}")
    out = {
        "density": density,
        "top3_ties_em": em(evals, top3),
        "all_ties_em": em(evals, all_),
        "merges_built": len(merged),
        "seconds": time.perf_counter() - t0,
    }
    log(f"ties: {out}")
    return out


def bench_modes(mem: LoRAMemory, evals: list[dict[str, str]], new_tokens: int) -> dict[str, Any]:
    """Every mode on every question, the modes interleaved question by question (the order
    rotates), so a slow patch of a shared machine lands on all modes alike."""
    for mode in MODES:  # warm-up: first adapter loads, first Chroma query, lazy imports
        mem.ask(NS, evals[0]["question"], mode=mode, max_new_tokens=new_tokens)
    rows: dict[str, dict[str, list[Any]]] = {
        m: {"replies": [], "lat": [], "ctx": [], "used": [], "out": []} for m in MODES
    }
    for i, e in enumerate(evals):
        for mode in MODES[i % len(MODES) :] + MODES[: i % len(MODES)]:
            t = time.perf_counter()
            a = mem.ask(NS, e["question"], mode=mode, max_new_tokens=new_tokens)
            r = rows[mode]
            r["lat"].append(time.perf_counter() - t)
            r["replies"].append(a.text)
            r["ctx"].append(a.context_tokens)
            r["used"].append(a.mode)
            r["out"].append(a.new_tokens)
    out: dict[str, Any] = {}
    for mode, r in rows.items():
        out[mode] = {
            "em": em(evals, r["replies"]),
            "p50_ms": 1000 * statistics.median(r["lat"]),
            "p95_ms": 1000 * pct(r["lat"], 95),
            "prompt_tokens_mean": statistics.fmean(r["ctx"]),
            "new_tokens_mean": statistics.fmean(r["out"]),
            "ms_per_new_token": 1000 * sum(r["lat"]) / max(1, sum(r["out"])),
            "answered_as": {m: r["used"].count(m) for m in sorted(set(r["used"]))},
            "interleaved": True,
        }
        log(f"mode {mode}: {out[mode]}")
    return out


def bench_batching(
    mem: LoRAMemory, evals: list[dict[str, str]], own: list[str], new_tokens: int
) -> dict[str, Any]:
    """Same questions, interleaved by module: one ask each vs ask_many (batches of 16)."""
    groups: dict[str, list[str]] = {}
    for e, o in zip(evals, own, strict=True):
        groups.setdefault(o, []).append(e["question"])
    order: list[str] = []
    while any(groups.values()):
        for g in groups.values():
            if g:
                order.append(g.pop())
    t0 = time.perf_counter()
    one = [mem.ask(NS, q, mode="lora", max_new_tokens=new_tokens) for q in order]
    one_s = time.perf_counter() - t0
    gen = mem.generator()
    timed: dict[str, float] = {}
    for impl in ("stacked", "peft", "stacked"):  # the default twice, around peft's loop
        gen.mixed_batch = impl
        t0 = time.perf_counter()
        many = mem.ask_many(NS, order, mode="lora", max_new_tokens=new_tokens, batch_size=16)
        timed[impl] = min(timed.get(impl, float("inf")), time.perf_counter() - t0)
    gen.mixed_batch = "stacked"
    many_s = timed["stacked"]
    same = sum(a.text == b.text for a, b in zip(one, many, strict=True))
    out = {
        "questions": len(order),
        "one_at_a_time_qps": len(order) / one_s,
        "ask_many_qps": len(order) / many_s,
        "ask_many_peft_loop_qps": len(order) / timed["peft"],
        "speedup": one_s / many_s,
        "speedup_peft_loop": one_s / timed["peft"],
        "same_text": same,
        "modules_per_batch_16": len({a.modules for a in many[:16]}),
    }
    log(f"batching: {out}")
    return out


def table(r: dict[str, Any]) -> str:
    rt, modes = r["routing"], r["modes"]
    lines = [
        f"Routing over {r['modules']} modules, {rt['questions']} questions:",
        "",
        "| composition | EM |",
        "|---|---|",
        f"| oracle routing (module holding the record) | {rt['oracle_em']:.1%} |",
        f"| **routed top-1 (default)** | **{rt['routed_top1_em']:.1%}** |",
    ]
    if "ties" in r:
        t = r["ties"]
        lines += [
            f"| TIES merge of the top-3 routed modules (density {t['density']}) | "
            f"{t['top3_ties_em']:.1%} |",
            f"| TIES merge of all modules | {t['all_ties_em']:.1%} |",
        ]
    lines += [
        "",
        "Routing accuracy (chosen == module holding the record): "
        f"**{rt['routing_accuracy']:.1%}**; "
        f"median confidence {rt['confidence_p50']:.2f}; fell back to rag: {rt['fell_back']}.",
        "",
        "| mode | EM | p50 ms | p95 ms | prompt tokens (mean) | tokens out (mean) | ms / token |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, v in modes.items():
        lines.append(
            f"| {m} | {v['em']:.1%} | {v['p50_ms']:.0f} | {v['p95_ms']:.0f} | "
            f"{v['prompt_tokens_mean']:.0f} | {v.get('new_tokens_mean', float('nan')):.1f} | "
            f"{v.get('ms_per_new_token', float('nan')):.0f} |"
        )
    b = r["batching"]
    lines += [
        "",
        f"lora p50 / base p50 = **{modes['lora']['p50_ms'] / modes['base']['p50_ms']:.2f}x** "
        "(routing + adapter cost per question; target <= 1.1x).",
        "",
        f"Batched multi-adapter generation: `ask_many` {b['ask_many_qps']:.2f} q/s vs one `ask` "
        f"at a time {b['one_at_a_time_qps']:.2f} q/s = **{b['speedup']:.1f}x** (questions "
        f"interleaved across modules; {b['modules_per_batch_16']} modules in the first batch of "
        f"16; {b['same_text']}/{b['questions']} identical answers)."
        + (
            f" With peft's per-module loop instead of the stacked LoRA forward: "
            f"{b['ask_many_peft_loop_qps']:.2f} q/s = {b['speedup_peft_loop']:.1f}x."
            if "speedup_peft_loop" in b
            else ""
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/datasets/phonebook")
    p.add_argument("--slice", default="2K")
    p.add_argument("--modules", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--density", type=float, default=0.5)
    p.add_argument("--parts", default="routing,ties,modes,batching")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--store", type=Path, default=Path("/tmp/lm-recall-store"))
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs/benchmarks")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts, evals = load(args.data, args.slice)
    mem, build = build_store(args, texts)
    own = owners(mem, evals)
    parts = set(args.parts.split(","))
    env = base_environment(["torch", "transformers", "peft", "chromadb"])
    env["device"] = str(mem.generator().device)
    result: dict[str, Any] = {
        "slice": args.slice,
        "modules": len(mem.modules(NS)),
        "facts": len(texts),
        "seed": args.seed,
        "environment": env,
        "build": build,
    }
    out_json = args.out / "recall.json"
    if out_json.exists():  # keep parts measured by an earlier run of the same setup
        old = json.loads(out_json.read_text(encoding="utf-8"))
        if old.get("slice") == args.slice and old.get("modules") == result["modules"]:
            result = {**old, **{k: v for k, v in result.items() if k != "build"}}
    if "routing" in parts:
        result["routing"] = bench_routing(mem, evals, own, args.new_tokens)
    if "ties" in parts:
        result["ties"] = bench_ties(mem, evals, args.new_tokens, args.density)
    if "modes" in parts:
        result["modes"] = bench_modes(mem, evals, args.new_tokens)
    if "batching" in parts:
        result["batching"] = bench_batching(mem, evals, own, args.new_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if all(k in result for k in ("routing", "modes", "batching")):
        e = result["environment"]
        md = (
            "# Recall across modules (routing, composition, modes, batching)\n\n"
            f"Machine: {e['cpu_model']}, {e['cpu_count']} cores, device {e['device']}; "
            f"torch {e['packages']['torch']}, peft {e['packages']['peft']}; commit "
            f"{e['git_commit'][:7]}, {e['date']}.\n\n"
            f"PhoneBook {result['slice']} ({result['facts']} facts) consolidated into "
            f"{result['modules']} r=16 modules by the capacity planner; the slice's eval "
            "questions; default model (SmolLM2-135M-Instruct). Produced by "
            "`benchmarks/recall.py`.\n\n" + table(result) + "\n"
        )
        (args.out / "recall.md").write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
