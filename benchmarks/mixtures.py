"""Which synthetic-data mixture makes the default model recall conversation facts best?

The paper (arXiv 2603.01097) ranks training formats QA > summary > rewrite > original and finds
mixtures best, with GPT-4.1 writing the data for 8B models. Our default writes its data with the
base model itself (SmolLM2-135M-Instruct) on a 2-core CPU, so we measure instead of assuming:

- data: ``--facts`` user turns that state facts in passing (``datasets.conversations``), each
  with a held-out question worded differently from the turn;
- per mixture: a fresh store, the turns added, ``consolidate(ns, mixture=..., writer="local")``,
  then every held-out question through ``ask(mode="lora")``; exact match = the answer string
  appears in the reply. ``base`` mode (no memory) is the floor, ``rag`` the buffer's level.

All mixtures run in one process, one after the other, with the same seed and step budget.
Writes ``<out>/mixtures.json`` and ``<out>/mixtures.md``.

    .venv/bin/python benchmarks/mixtures.py            # default: 24 facts, 6 mixtures
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from write_path import environment, machine_line

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin.datasets.conversations import conversation_facts

NS = "mixtures"
DEFAULT_MIXTURES = "original,rewrite,summary,qa,qa+original,all"


def hit(expected: str, reply: str) -> bool:
    return expected.strip().lower() in reply.strip().lower()


def run_mixture(mixture: str, facts: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lm-mix-") as tmp:
        mem = LoRAMemory.open(Path(tmp) / "store")
        mem.add_turns(NS, [{"content": f.turn, "role": "user", "session_id": "s1"} for f in facts])
        t0 = time.perf_counter()
        [report] = mem.consolidate(
            NS, mixture=mixture, writer="local", target=1e-6, seed=args.seed, progress=False
        )
        wall = time.perf_counter() - t0
        answers = []
        for f in facts:
            a = mem.ask(NS, f.question, mode="lora", max_new_tokens=16)
            answers.append({"q": f.question, "expected": f.answer, "reply": a.text, "mode": a.mode})
        em = sum(hit(x["expected"], x["reply"]) and x["mode"] == "lora" for x in answers)
        module = report.modules[0] if report.modules else {}
        return {
            "mixture": mixture,
            "status": report.status,
            "held_out_em": em / len(facts),
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


def reference_modes(facts: list[Any]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lm-mix-ref-") as tmp:
        mem = LoRAMemory.open(Path(tmp) / "store")
        mem.add_turns(NS, [{"content": f.turn, "role": "user", "session_id": "s1"} for f in facts])
        out = {}
        for mode in ("base", "rag"):
            hits = sum(
                hit(f.answer, mem.ask(NS, f.question, mode=mode, max_new_tokens=16).text)
                for f in facts
            )
            out[mode] = hits / len(facts)
        return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "| training data | held-out EM | probe recall | examples kept / made | steps | "
        "train s | consolidate s | drift |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        kept = sum(v.get("kept", 0) for v in r["synthetic"].values() if isinstance(v, dict))
        made = sum(v.get("made", 0) for v in r["synthetic"].values() if isinstance(v, dict))
        probe = "n/a" if r["probe_recall"] is None else f"{r['probe_recall']:.0%}"
        drift = "n/a" if r["drift"] is None else f"{r['drift']:+.1%}"
        lines.append(
            f"| {r['mixture']} | **{r['held_out_em']:.0%}** ({r['held_out_hits']}/"
            f"{result['facts']}) | {probe} | {kept} / {made} | {r['steps']} | "
            f"{r['train_seconds']:.0f} | {r['consolidate_seconds']:.0f} | {drift} |"
        )
    ref = result["reference"]
    lines.append(f"| *(no memory: base mode)* | {ref['base']:.0%} | | | | | | |")
    lines.append(f"| *(buffer: rag mode)* | {ref['rag']:.0%} | | | | | | |")
    return "\n".join(lines)


def write_markdown(result: dict[str, Any], out: Path) -> None:
    best = max(result["runs"], key=lambda r: (r["held_out_em"], -r["consolidate_seconds"]))
    text = (
        "# Synthetic-data mixtures on the default model\n\n"
        f"Machine: {machine_line(result['environment'])}.\n\n"
        f"{result['facts']} conversation facts (user turns, `datasets.conversations`, seed "
        f"{result['seed']}); each mixture consolidated into one module in a fresh store with the "
        "local writer (SmolLM2-135M-Instruct writes its own training data), then every "
        "held-out question asked in `lora` mode. Exact match: the expected string appears in "
        "the reply. Produced by `benchmarks/mixtures.py`.\n\n"
        f"{table(result)}\n\n"
        f"Best: **{best['mixture']}** ({best['held_out_em']:.0%}).\n"
    )
    (out / "mixtures.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--facts", type=int, default=24)
    p.add_argument("--mixtures", default=DEFAULT_MIXTURES, help="comma-separated mixtures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs/benchmarks"
    )
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    facts = conversation_facts(args.facts, seed=args.seed)
    result: dict[str, Any] = {
        "facts": len(facts),
        "seed": args.seed,
        "environment": environment(),
        "runs": [],
    }
    result["reference"] = reference_modes(facts)
    print(f"reference: {result['reference']}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for mixture in args.mixtures.split(","):
        run = run_mixture(mixture.strip(), facts, args)
        print(
            f"{run['mixture']}: held-out EM {run['held_out_em']:.0%}, probe {run['probe_recall']}, "
            f"{run['steps']} steps, {run['consolidate_seconds']:.0f}s",
            file=sys.stderr,
        )
        result["runs"].append(run)
        result["environment"]["loadavg_end"] = list(__import__("os").getloadavg())
        (args.out / "mixtures.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        write_markdown(result, args.out)
    print((args.out / "mixtures.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
