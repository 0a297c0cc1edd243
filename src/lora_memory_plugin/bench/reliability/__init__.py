"""Reliability checks: concurrency, isolation, fuzzing, server faults, forgetting, integrity.

Full run (the counts docs/reliability.md reports; ~30-60 min on a 2-core CPU):

    .venv/bin/python -m lora_memory_plugin.bench.reliability --part all

One part, or smaller counts:

    .venv/bin/python -m lora_memory_plugin.bench.reliability --part fuzz --examples 2000

Parts (one module each in this package):

- ``concurrency``: ``--writers`` processes each call ``add_turn`` ``--turns`` times on one
  embedded store and namespace while ``--consolidators`` processes consolidate that namespace in
  a loop (alternating the API and the CLI). Afterwards every turn must be there exactly once,
  every consolidated record held by exactly one live module, and no two consolidation runs of
  the namespace may overlap in time (each process times ``engine._run``, the part under the
  lock). Then a deterministic race: B tries the API and the CLI while A is inside its run: B
  must get ``LockHeldError`` / exit code 3.
- ``isolation``: 20 namespaces (hostile names included: ``../``, NUL, slashes, Unicode, lone
  surrogates, 4096-char names, names that differ only in case or punctuation), some holding
  LoRA modules with the *same* questions and different answers. ``--queries`` random
  ``search`` / ``route`` / ``ask`` calls must never return a record, key or module of another
  namespace; every file the store creates stays under its directory.
- ``fuzz``: ``--examples`` hypothesis-generated calls to add_turn, add_turns, add_document,
  search, get, ask, recall, route and the CLI (``main(argv)``). Only ``LoraMemoryError``
  subclasses may escape (argparse's ``SystemExit`` counts as a usage error, exit 2); records
  stored before must be unchanged afterwards, and every accepted write must read back as given.
- ``server``: a real ``chroma run``, killed (SIGKILL / SIGTERM in turn) while a writer thread
  calls ``add_turn`` / ``add_turns``: the write must fail with ``BackendError`` (never hang,
  never another type), reads while it is down too; after a restart on the same data, every
  acknowledged record is there, each record of the interrupted call is absent or complete, the
  retried call completes, and search works.
- ``forget`` (on ``--base-model``, SmolLM2 by default): ``--forget-facts`` PhoneBook facts are
  consolidated, ``--forget-count`` of them forgotten (the module rebuilt from the rest). The
  forgotten facts must be known before and, after, answered no better than the base model and
  absent from search; the kept facts must stay >= 95%; a second namespace must not change.
- ``integrity``: ``--integrity-rounds`` rounds of two damages to a fresh module (a flipped
  byte in the weights, another module's valid weights): each must be quarantined at load (rag
  answer that says so, ``status`` lists it) and retrained by the next consolidation. A third
  fresh module gets a manifest naming other base weights: no damage, so it must be skipped (rag
  answer that says so), not quarantined, and left as it is by the next consolidation.

Writes ``--out`` (default docs/benchmarks/reliability.json in the checkout this package runs
from, else under the current directory) and prints a summary. The test suite
(tests/reliability/) runs the same functions with small counts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ...memory import LoRAMemory
from ...testing import build_tiny_model, sharpen_model
from .._env import base_environment
from . import concurrency, forget, fuzz, integrity, isolation, server
from ._shared import log, tmp_dir

__all__ = ["DEFAULT_OUT", "PACKAGES", "PARTS", "main", "summary"]


def _default_out() -> Path:
    """docs/benchmarks/reliability.json of the source checkout this package runs from (an
    editable install: src/lora_memory_plugin/bench/reliability/ four levels below it), else
    under the current directory."""
    root = Path(__file__).resolve().parents[4]
    base = root if (root / "pyproject.toml").is_file() else Path()
    return base / "docs" / "benchmarks" / "reliability.json"


DEFAULT_OUT = _default_out()
PACKAGES = ("lora-memory-plugin", "chromadb", "torch", "transformers", "hypothesis")
PARTS = ("concurrency", "isolation", "fuzz", "server", "forget", "integrity")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=f"python -m {__name__}", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--part", choices=[*PARTS, "all"], default="all")
    p.add_argument(
        "--base-model", default="default", help="the model forget runs on (default: SmolLM2)"
    )
    p.add_argument("--forget-facts", type=int, default=8, help="facts in the forget namespace")
    p.add_argument("--forget-count", type=int, default=2, help="how many of them to forget")
    p.add_argument("--integrity-rounds", type=int, default=10, help="rounds of each damage")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--turns", type=int, default=2500, help="add_turn calls per writer")
    p.add_argument("--consolidators", type=int, default=2)
    p.add_argument("--queries", type=int, default=10_000, help="isolation queries")
    p.add_argument(
        "--ask-share",
        type=float,
        default=0.05,
        help="share of isolation queries "
        "that generate (ask); the rest split between search and route",
    )
    p.add_argument("--examples", type=int, default=10_000, help="fuzz examples")
    p.add_argument("--rounds", type=int, default=20, help="server kills")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true", help="keep the temp stores")
    p.add_argument("--_launch", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._launch:
        cfg = json.loads(args._launch.read_text())
        out = concurrency.launch(cfg)
        (Path(cfg["work"]) / "launch.json").write_text(json.dumps(out))
        return 0

    parts = list(PARTS) if args.part == "all" else [args.part]
    if "fuzz" in parts:
        fuzz.require_hypothesis()  # before hours of the other parts
    prior = json.loads(args.out.read_text()) if args.out.exists() else {}
    report: dict[str, Any] = {"results": prior.get("results", {})}
    with tmp_dir(args.keep) as tmp:
        tiny = str(build_tiny_model(tmp / "tiny"))
        for part in parts:
            log(f"== {part}")
            t0 = time.time()
            if part == "concurrency":
                res = concurrency.run_concurrency(
                    tmp / "concurrency",
                    tiny,
                    writers=args.writers,
                    turns=args.turns,
                    consolidators=args.consolidators,
                )
                config = {
                    "writers": args.writers,
                    "turns": args.turns,
                    "consolidators": args.consolidators,
                }
            elif part == "isolation":
                sharp = str(sharpen_model(Path(tiny), tmp / "sharp"))
                parent = tmp / "isolation"
                parent.mkdir()
                mem = LoRAMemory.open(parent / "store", base_model=sharp)
                built = isolation.build_isolation_store(mem)
                res = isolation.run_isolation(
                    mem,
                    built,
                    queries=args.queries,
                    ask_share=args.ask_share,
                    seed=args.seed,
                    parent=parent,
                )
                config = {"queries": args.queries, "ask_share": args.ask_share}
            elif part == "fuzz":
                mem = LoRAMemory.open(tmp / "fuzz" / "store", base_model=tiny)
                fuzz.fill_fuzz_store(mem)
                (tmp / "fuzz" / "a-file").write_text("not a store")
                dirs = {
                    "store": str(mem.path),
                    "new": str(tmp / "fuzz" / "new"),
                    "file": str(tmp / "fuzz" / "a-file"),
                    "nul": str(tmp / "fuzz" / "a\0b"),
                }
                res = fuzz.run_fuzz(mem, dirs, examples=args.examples, seed=args.seed)
                config = {"examples": args.examples}
            elif part == "forget":
                res = forget.run_forget(
                    tmp / "forget",
                    args.base_model,
                    facts=args.forget_facts,
                    forget=args.forget_count,
                    seed=args.seed,
                )
                config = {"base_model": args.base_model}
            elif part == "integrity":
                sharp = str(sharpen_model(Path(tiny), tmp / "sharp-integrity"))
                mem = LoRAMemory.open(tmp / "integrity" / "store", base_model=sharp)
                res = integrity.run_integrity(mem, rounds=args.integrity_rounds)
                config = {"rounds": args.integrity_rounds}
            else:
                res = server.run_server_faults(tmp / "server", rounds=args.rounds, seed=args.seed)
                config = {"rounds": args.rounds}
            res["config"] = {**config, "seed": args.seed}
            res["total_seconds"] = round(time.time() - t0, 1)
            report["results"][part] = res
            log(f"   {part}: {'OK' if res['ok'] else 'PROBLEMS'} in {res['total_seconds']} s")
    report["environment"] = base_environment(PACKAGES)
    report["environment"]["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(summary(report))
    return 0 if all(r["ok"] for r in report["results"].values()) else 1


def summary(report: dict[str, Any]) -> str:
    lines = ["reliability summary"]
    for part, r in report["results"].items():
        kind = part.split("_")[0]  # earlier runs kept beside the newest: "isolation_2000"
        if kind == "concurrency":
            detail = (
                f"{r['writers']} writers x {r['turns_per_writer']} add_turn: "
                f"{r['records_found']}/{r['records_expected']} records, "
                f"{r['duplicates']} duplicates, {r['missing']} missing; "
                f"{r['consolidation_runs']} consolidation runs "
                f"({r['runs_started_while_writing']} while writing), "
                f"{r['overlapping_runs']} overlapping; race {r['race']}"
            )
        elif kind == "isolation":
            detail = (
                f"{r['queries']} queries {r['by_op']} over {r['namespaces']} namespaces: "
                f"{r['cross_namespace_results']} cross-namespace results; "
                f"{r['disk']['paths_checked']} paths on disk, "
                f"{len(r['disk']['problems'])} outside/raw"
            )
        elif kind == "fuzz":
            detail = (
                f"{r['calls']} calls: {r['untyped']} untyped errors (+"
                f"{sum(r['known_bugs_hit'].values())} known), {r['lost']} lost, "
                f"{r['changed']} changed, {r['roundtrip_failures']} bad round trips"
            )
        elif kind == "forget":
            detail = (
                f"{r['forgotten']} of {r['facts']} facts forgotten: recall before "
                f"{r['recall']['before']}, after {r['recall']['after']}"
            )
        elif kind == "integrity":
            detail = f"{r['rounds']} rounds of each case: {r['stats']}"
        else:
            detail = (
                f"{r['rounds']} server kills: {r['stats']}; "
                f"{r['records_final']} records, {r['records_acknowledged']} acknowledged"
            )
        lines.append(f"- {part}: {'OK' if r['ok'] else 'PROBLEMS'}; {detail}")
        lines += [f"    ! {x}" for x in r.get("problems", r.get("untyped_examples", []))[:10]]
    return "\n".join(lines)
