"""Consolidation probe: memorise PhoneBook 1K (48 facts) into a LoRA on the default base model.

    .venv/bin/python benchmarks/consolidation_probe.py
    .venv/bin/python benchmarks/consolidation_probe.py --setting rank=8 --setting lr=2e-3

Each ``--setting`` is comma-separated ``TrainConfig`` overrides (``rank=8,lr=2e-3,batch_size=48``);
without one, the defaults run. For each setting: train with ``train_lora`` until teacher-forced
recall 1.0 (or the budget: ``--max-seconds``, default 600), save the adapter, then answer the 48
questions greedily through ``Generator.chat(..., adapter=...)`` (the serving path, the same
rendered prompts); exact match = the first NNN-NNN-NNNN in the reply equals the number.
Needs SmolLM2 pulled (``lora-memory models pull``) and the PhoneBook data in
``../shared/datasets/phonebook`` (beside the checkout). Prints a Markdown table;
``--out FILE`` also writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

from lora_memory_plugin.config import GenerationConfig
from lora_memory_plugin.consolidation.trainer import Example, TrainConfig, save_adapter, train_lora
from lora_memory_plugin.generation.backend import Generator
from lora_memory_plugin.models.pull import default_base_model_dir

# The shared datasets sit beside the checkout (../shared), never copied into the repo.
DATA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "phonebook"
    / "phonebook_qa_1K.csv"
)
ROW = re.compile(r"Question: (?P<q>.+\?) Answer: (?P<a>\d{3}-\d{3}-\d{4})\s*$")
NUMBER = re.compile(r"\d{3}-\d{3}-\d{4}")


def load_examples(path: Path, system: str) -> list[Example]:
    with path.open(newline="") as f:
        rows = [ROW.match(r["text"].strip()) for r in csv.DictReader(f)]
    return [Example.qa(m["q"], m["a"], system=system) for m in rows if m]


def parse_setting(text: str) -> dict[str, object]:
    types = {f.name: f.type for f in fields(TrainConfig)}
    out: dict[str, object] = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=", 1)
        kind = str(types[key])
        out[key] = int(value) if kind == "int" else float(value) if "float" in kind else value
    return out


def generation_em(gen: Generator, adapter_dir: Path, examples: list[Example]) -> float:
    """Greedy answers through Generator.chat with the saved adapter active (the serving path)."""
    name = f"probe-{adapter_dir.name}"
    hits = 0
    for ex in examples:
        reply = gen.chat(ex.messages(), max_new_tokens=16, adapter=(name, adapter_dir)).text
        m = NUMBER.search(reply)
        hits += bool(m and m.group(0) == ex.answer)
    gen.forget_adapter(name)
    return hits / len(examples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", action="append", default=[], help="TrainConfig overrides")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()

    system = GenerationConfig().system_prompt
    examples = load_examples(DATA, system)
    gen = Generator(str(default_base_model_dir()))
    print(f"{len(examples)} facts; base {gen.path} on {gen.device}", file=sys.stderr)
    results = []
    for text in args.setting or [""]:
        overrides = {"max_seconds": args.max_seconds, **parse_setting(text)}
        config = TrainConfig(**overrides)  # type: ignore[arg-type]
        load_before = os.getloadavg()[0]
        cpu0 = time.process_time()
        r = train_lora(gen.path, examples, config)  # its own copy, as consolidation does
        cpu_s = time.process_time() - cpu0  # CPU seconds (all threads): steadier under load
        with tempfile.TemporaryDirectory() as tmp:
            save_adapter(r, tmp)
            t0 = time.perf_counter()
            em = generation_em(gen, Path(tmp), examples)
            gen_s = time.perf_counter() - t0
        first_full = next((s for s, _, rec in r.recall_history if rec >= 1.0), None)
        row = {
            "setting": text or "defaults",
            "rank": config.rank,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "steps": r.steps,
            "epochs": r.epochs,
            "seconds": round(r.seconds, 1),
            "s_per_epoch": round(r.seconds / r.epochs, 2),
            "cpu_seconds": round(cpu_s, 1),
            "tokens_per_s": round(r.tokens_per_second),
            "padding": round(r.padding_fraction, 3),
            "tf_recall": r.recall,
            "step_at_tf_1.0": first_full,
            "gen_em": em,
            "gen_seconds": round(gen_s, 1),
            "stopped": r.stopped_because,
            "load_avg_1m": round(load_before, 2),
            "history": r.recall_history,
        }
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "history"}), file=sys.stderr)

    cols = [
        "setting", "steps", "epochs", "seconds", "cpu_seconds", "s_per_epoch", "tokens_per_s",
        "tf_recall", "gen_em", "stopped", "load_avg_1m",
    ]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in results:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
