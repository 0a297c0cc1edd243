"""Reliability checks: concurrency, isolation, fuzzing, server faults, forgetting, integrity.

Full run (the counts docs/reliability.md reports; ~30-60 min on a 2-core CPU):

    .venv/bin/python benchmarks/reliability.py --part all

One part, or smaller counts:

    .venv/bin/python benchmarks/reliability.py --part fuzz --examples 2000

Parts:

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

Writes ``--out`` (default docs/benchmarks/reliability.json) and prints a summary. The test suite
(tests/reliability/) runs the same functions with small counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks" / "reliability.json"
PACKAGES = ("lora-memory-plugin", "chromadb", "torch", "transformers", "hypothesis")

# Cheap consolidation: plain prose, 3 steps; what is under test is locking, not learning.
CHEAP_CONSOLIDATION = {"max_steps": 3, "mixture": "original", "drift_max": 100.0}
# Consolidation that makes the sharpened tiny model answer (as tests/consolidation does).
FAST_CONSOLIDATION = {"lr": 1e-2, "rank": 16, "max_steps": 400}

# fmt: off
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "locker", "code", "phone", "garden",
    "kitchen", "train", "ticket", "flight", "gate", "passport", "dentist", "cake", "router",
]
# fmt: on


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# =============================================================================================
# 3. concurrency
# =============================================================================================
def writer_text(w: int, i: int) -> str:
    return f"writer {w} turn {i}: " + _sentence(random.Random(w * 1_000_003 + i), 6)


def _child_writer(cfg: dict[str, Any], w: int) -> dict[str, Any]:
    from lora_memory_plugin import LoRAMemory

    mem = LoRAMemory.open(cfg["store"], create=False)
    ids, errors = [], []
    t0 = time.time()
    for i in range(cfg["turns"]):
        try:
            ids.append(mem.add_turn(cfg["namespace"], writer_text(w, i), session_id=f"w{w}"))
        except Exception as e:
            errors.append(f"turn {i}: {type(e).__name__}: {e}")
            ids.append(None)
    return {"writer": w, "ids": ids, "errors": errors, "start": t0, "end": time.time()}


def _timed_runs(marker_dir: Path | None = None, hold_for: Path | None = None) -> list[list[float]]:
    """Wrap ``engine._run`` (the part under the namespace lock) to record its intervals."""
    from lora_memory_plugin.consolidation import engine

    runs: list[list[float]] = []
    real = engine._run

    def timed(*a: Any, **kw: Any) -> Any:
        start = time.time()
        if marker_dir is not None:
            (marker_dir / "a_in_run").write_text(str(os.getpid()))
        if hold_for is not None:  # keep the lock until the other process has tried
            deadline = time.time() + 120
            while not hold_for.exists() and time.time() < deadline:
                time.sleep(0.02)
        try:
            return real(*a, **kw)
        finally:
            runs.append([start, time.time()])

    engine._run = timed  # type: ignore[assignment]
    return runs


def _child_consolidator(cfg: dict[str, Any], c: int) -> dict[str, Any]:
    from lora_memory_plugin import LockHeldError, LoRAMemory
    from lora_memory_plugin.cli.main import main

    runs = _timed_runs()
    mem = LoRAMemory.open(cfg["store"], create=False)
    done = Path(cfg["work"]) / "writers_done"
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    attempt = 0
    rng = random.Random(c)
    argv_opts = ["--max-steps", "3", "--mixture", "original", "--json"]
    while True:
        finished = done.exists()  # one more attempt after the writers are done
        use_cli = attempt % 2 == 1
        attempt += 1
        try:
            if use_cli:
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    code = main(["consolidate", cfg["store"], "-n", cfg["namespace"], *argv_opts])
                outcomes[f"cli_exit_{code}"] += 1
            else:
                [rep] = mem.consolidate(cfg["namespace"], **CHEAP_CONSOLIDATION)
                outcomes[f"api_{rep.status}"] += 1
        except LockHeldError:
            outcomes["api_LockHeldError"] += 1
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")
            outcomes[f"error_{type(e).__name__}"] += 1
        if finished:
            break
        time.sleep(rng.uniform(0.0, 0.3))
    return {"consolidator": c, "outcomes": dict(outcomes), "runs": runs, "errors": errors}


def _child_race_a(cfg: dict[str, Any]) -> dict[str, Any]:
    from lora_memory_plugin import LoRAMemory

    work = Path(cfg["work"])
    runs = _timed_runs(marker_dir=work, hold_for=work / "b_done")
    mem = LoRAMemory.open(cfg["store"], create=False)
    [rep] = mem.consolidate(cfg["namespace"], **CHEAP_CONSOLIDATION)
    return {"status": rep.status, "modules_created": list(rep.modules_created), "runs": runs}


def _child_race_b(cfg: dict[str, Any]) -> dict[str, Any]:
    from lora_memory_plugin import LockHeldError, LoRAMemory
    from lora_memory_plugin.cli.main import main

    work = Path(cfg["work"])
    runs = _timed_runs()
    deadline = time.time() + 120
    while not (work / "a_in_run").exists() and time.time() < deadline:
        time.sleep(0.02)
    mem = LoRAMemory.open(cfg["store"], create=False)
    out: dict[str, Any] = {"runs": runs}
    try:
        [rep] = mem.consolidate(cfg["namespace"], **CHEAP_CONSOLIDATION)
        out["api"] = f"returned {rep.status}"
    except LockHeldError as e:
        out["api"] = "LockHeldError"
        out["api_message"] = str(e)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        out["cli_exit"] = main(["consolidate", cfg["store"], "-n", cfg["namespace"], "--json"])
    out["cli_json"] = buf.getvalue().strip()
    (work / "b_done").write_text("1")
    return out


def _fork(fn: Callable[[], dict[str, Any]], result: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        try:
            out = fn()
            code = 0
        except BaseException as e:
            out = {"fatal": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        result.write_text(json.dumps(out))
    finally:
        os._exit(code)


def _wait_all(pids: dict[int, str], timeout: float) -> dict[str, int]:
    codes: dict[str, int] = {}
    deadline = time.time() + timeout
    while pids and time.time() < deadline:
        for pid in list(pids):
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                codes[pids.pop(pid)] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for pid, name in pids.items():  # timed out: kill what is left
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        codes[name] = -9
    return codes


def launch(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: warm the models once, then fork every worker from here.

    A cold process spends ~10 s importing torch and loading MiniLM on a small CPU; forking
    warm children makes every worker start at once. This process never opens a store (Chroma's
    Rust runtime would not survive a fork) and is single-threaded when it forks.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"  # no loader threads alive at the fork
    import torch

    torch.set_num_threads(1)
    from lora_memory_plugin.config import ModelConfig
    from lora_memory_plugin.consolidation import engine, trainer  # noqa: F401
    from lora_memory_plugin.generation.backend import get_generator
    from lora_memory_plugin.store.embedder import MiniLMEmbeddingFunction
    from lora_memory_plugin.testing import wait_for_single_thread

    MiniLMEmbeddingFunction().embed(["warm up"])
    m = ModelConfig(base_model=cfg["base_model"])
    get_generator(m.base_model, m.device, m.dtype)
    # HF_DEACTIVATE_ASYNC_LOAD above keeps transformers' loader from starting a thread pool;
    # any other straggler gets time to end
    alive = wait_for_single_thread(30)
    if alive:
        raise RuntimeError(f"{len(alive) + 1} threads ({alive}); refusing to fork")
    work = Path(cfg["work"])
    res = work / "results"
    res.mkdir(exist_ok=True)
    t0 = time.time()
    pids: dict[int, str] = {}
    for w in range(cfg["writers"]):
        pids[_fork(lambda w=w: _child_writer(cfg, w), res / f"writer-{w}.json")] = f"writer-{w}"
    for c in range(cfg["consolidators"]):
        name = f"consolidator-{c}"
        pids[_fork(lambda c=c: _child_consolidator(cfg, c), res / f"{name}.json")] = name
    writers = {p: n for p, n in pids.items() if n.startswith("writer")}
    others = {p: n for p, n in pids.items() if not n.startswith("writer")}
    codes = _wait_all(writers, cfg["timeout"])
    writers_end = time.time()
    (work / "writers_done").write_text("1")
    codes.update(_wait_all(others, cfg["timeout"]))
    # the deterministic race: B tries while A is inside its run
    race = {}
    if cfg["race"]:
        pa = _fork(lambda: _child_race_a(cfg), res / "race-a.json")
        pb = _fork(lambda: _child_race_b(cfg), res / "race-b.json")
        codes.update(_wait_all({pa: "race-a", pb: "race-b"}, 300))
        race = {n: json.loads((res / f"{n}.json").read_text()) for n in ("race-a", "race-b")}
    children = {}
    for f in sorted(res.glob("*.json")):
        if not f.stem.startswith("race"):
            children[f.stem] = json.loads(f.read_text())
    return {
        "exit_codes": codes,
        "children": children,
        "race": race,
        "writers_seconds": writers_end - t0,
        "t0": t0,
        "writers_end": writers_end,
    }


def run_concurrency(
    work: Path,
    base_model: str,
    *,
    writers: int = 4,
    turns: int = 2500,
    consolidators: int = 2,
    seed_records: int = 8,
    race: bool = True,
    timeout: float = 3600,
) -> dict[str, Any]:
    """Concurrent writers + looping consolidations on one embedded store; returns the checks."""
    from lora_memory_plugin import LoRAMemory

    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    ns = "shared"
    mem = LoRAMemory.open(store, base_model=base_model)
    seed = [f"seed record {i}: " + _sentence(random.Random(-i - 1)) for i in range(seed_records)]
    seed_ids = mem.add_turns(ns, [{"content": t} for t in seed])
    cfg = {
        "store": str(store),
        "namespace": ns,
        "work": str(work),
        "writers": writers,
        "turns": turns,
        "consolidators": consolidators,
        "base_model": base_model,
        "race": race,
        "timeout": timeout,
    }
    (work / "config.json").write_text(json.dumps(cfg))
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--_launch", str(work / "config.json")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"launcher failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    launched = json.loads((work / "launch.json").read_text())
    wall = time.time() - t0
    return {**check_concurrency(mem, ns, seed, seed_ids, launched, cfg), "wall_seconds": wall}


def _overlaps(intervals: list[tuple[float, float, str]]) -> list[str]:
    out = []
    srt = sorted(intervals)
    for (s1, e1, n1), (s2, e2, n2) in itertools.pairwise(srt):
        if s2 < e1:
            out.append(f"{n1} [{s1:.3f}, {e1:.3f}] overlaps {n2} [{s2:.3f}, {e2:.3f}]")
    return out


def check_concurrency(
    mem: Any,
    ns: str,
    seed: list[str],
    seed_ids: list[str],
    launched: dict[str, Any],
    cfg: dict[str, Any],
) -> dict[str, Any]:
    from lora_memory_plugin.registry.modules import list_modules

    problems: list[str] = []
    ch = launched["children"]
    for name, code in launched["exit_codes"].items():
        if code != 0:
            problems.append(f"{name} exited {code}: {ch.get(name, {}).get('fatal', '')}")
    expected: dict[str, str] = dict(zip(seed_ids, seed, strict=True))
    writer_errors = []
    for w in range(cfg["writers"]):
        r = ch.get(f"writer-{w}", {})
        writer_errors += r.get("errors", [])
        for i, rid in enumerate(r.get("ids", [])):
            if rid is not None:
                expected[rid] = writer_text(w, i)
    problems += writer_errors[:20]
    records = mem.get(ns)
    ids = [r.id for r in records]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    texts = Counter(r.text for r in records)
    want = len(seed) + cfg["writers"] * cfg["turns"]
    missing = [i for i in expected if i not in set(ids)]
    wrong_text = [r.id for r in records if r.id in expected and expected[r.id] != r.text]
    unexpected = [r.id for r in records if r.id not in expected]
    if len(records) != want:
        problems.append(f"{len(records)} records, expected {want}")
    problems += [f"duplicate id {i}" for i in dupes[:10]]
    problems += [f"duplicate text {t!r}" for t, n in texts.items() if n > 1][:10]
    problems += [f"missing {i}" for i in missing[:10]]
    problems += [f"wrong text in {i}" for i in wrong_text[:10]]
    problems += [f"unexpected record {i}" for i in unexpected[:10]]
    # modules: every consolidated record is held by exactly one live module, which it names
    modules = list_modules(mem.path, ns)
    holder: dict[str, list[str]] = {}
    for m in modules:
        for rid in m.record_ids:
            holder.setdefault(rid, []).append(m.module_id)
    by_id = {r.id: r for r in records}
    consolidated = [r for r in records if r.metadata.get("status") == "consolidated"]
    for r in consolidated:
        if holder.get(r.id) != [r.metadata.get("module_id")]:
            problems.append(
                f"{r.id} consolidated into {r.metadata.get('module_id')!r} but held "
                f"by {holder.get(r.id)}"
            )
    problems += [f"module holds unknown record {rid}" for rid in holder if rid not in by_id][:10]
    problems += [f"record {rid} in {len(ms)} modules" for rid, ms in holder.items() if len(ms) > 1][
        :10
    ]
    # no two consolidation runs of the namespace overlapped in time
    intervals = []
    outcomes: Counter[str] = Counter()
    consolidation_errors = []
    for name, r in ch.items():
        if name.startswith("consolidator"):
            outcomes.update(r.get("outcomes", {}))
            consolidation_errors += r.get("errors", [])
            intervals += [(s, e, name) for s, e in r.get("runs", [])]
    problems += consolidation_errors[:5]
    race = launched.get("race") or {}
    for name in ("race-a", "race-b"):
        intervals += [(s, e, name) for s, e in race.get(name, {}).get("runs", [])]
    overlaps = _overlaps(intervals)
    problems += overlaps
    during = [
        (s, e)
        for s, e, n in intervals
        if n.startswith("consolidator") and s < launched["writers_end"]
    ]
    trained_during_writes = sum(
        1 for s, e, n in intervals if n.startswith("consolidator") and s < launched["writers_end"]
    )
    if cfg["consolidators"] and not during:
        problems.append("no consolidation run overlapped the writers")
    if race:
        b = race.get("race-b", {})
        a = race.get("race-a", {})
        if b.get("api") != "LockHeldError":
            problems.append(f"race: API consolidate while A held the lock: {b.get('api')}")
        if b.get("cli_exit") != 3:
            problems.append(f"race: CLI exit {b.get('cli_exit')} while A held the lock, not 3")
        if b.get("runs"):
            problems.append("race: B entered a consolidation run while A held the lock")
        if "status" not in a:
            problems.append(f"race: A failed: {a.get('fatal')}")
    return {
        "backend": "embedded",
        "writers": cfg["writers"],
        "turns_per_writer": cfg["turns"],
        "consolidator_processes": cfg["consolidators"],
        "records_expected": want,
        "records_found": len(records),
        "unique_ids": len(set(ids)),
        "duplicates": len(dupes),
        "missing": len(missing),
        "writer_errors": len(writer_errors),
        "consolidated_records": len(consolidated),
        "modules": len(modules),
        "consolidation_attempts": dict(outcomes),
        "consolidation_runs": len(intervals),
        "runs_started_while_writing": trained_during_writes,
        "overlapping_runs": len(overlaps),
        "race": {
            "a": (race.get("race-a") or {}).get("status"),
            "b_api": (race.get("race-b") or {}).get("api"),
            "b_cli_exit": (race.get("race-b") or {}).get("cli_exit"),
        }
        if race
        else None,
        "writers_seconds": round(launched["writers_seconds"], 1),
        "problems": problems,
        "ok": not problems,
    }


# =============================================================================================
# 4. isolation
# =============================================================================================
HOSTILE_NAMESPACES = [
    "user-42",
    "../../escape",
    "..",
    ".",
    "/etc/passwd",
    "a/b",
    "a-b",
    "a_b",
    "A-B",
    "nul\x00byte",
    "nul\x00bytf",
    "名前/ユーザー",
    "emoji 🙂 ns",
    "lone \ud800 surrogate",
    "x" * 4096,
    "x" * 4095 + "y",
    "lm-user-42",
    "  spaced  ",
    "C:\\Windows\\system32",
    "new\nline",
]
QA = [
    ("What is the code of box 0?", "4471"),
    ("What is the code of box 1?", "9302"),
]


def _tag(j: int) -> str:
    return f"[owner {j:02d}]"


def build_isolation_store(
    mem: Any, *, records: int = 12, with_modules: int = 2, rng_seed: int = 0
) -> dict[str, Any]:
    """Fill 20 hostile namespaces; consolidate the first ``with_modules`` (same questions,
    different answers); every namespace also holds one text shared with all the others."""
    rng = random.Random(rng_seed)
    ids: dict[str, set[str]] = {}
    for j, ns in enumerate(HOSTILE_NAMESPACES):
        turns = [
            {"content": f"{_tag(j)} note {i}: {_sentence(rng)}", "metadata": {"owner": j}}
            for i in range(records)
        ]
        turns.append({"content": "the same sentence in every namespace", "metadata": {"owner": j}})
        if j < with_modules:  # same questions everywhere, answers differ per namespace
            turns += [
                {"content": f"Question: {q} Answer: {a[j:] + a[:j]}", "metadata": {"owner": j}}
                for q, a in QA
            ]
        ids[ns] = set(mem.add_turns(ns, turns))
        if j < with_modules:
            [rep] = mem.consolidate(ns, **FAST_CONSOLIDATION)
            if rep.status != "consolidated":
                raise RuntimeError(f"consolidation of namespace {j} failed: {rep}")
    modules = {ns: {m.module_id for m in mem.modules(ns)} for ns in HOSTILE_NAMESPACES}
    return {"ids": ids, "modules": modules}


def run_isolation(
    mem: Any,
    built: dict[str, Any],
    *,
    queries: int = 10_000,
    ask_share: float = 0.05,
    seed: int = 0,
    parent: Path | None = None,
) -> dict[str, Any]:
    """Random search / route / ask calls; count anything from another namespace."""
    rng = random.Random(seed)
    ids, modules = built["ids"], built["modules"]
    nss = HOSTILE_NAMESPACES
    counts: Counter[str] = Counter()
    leaks: list[str] = []
    results: Counter[str] = Counter()
    t0 = time.time()
    for q in range(queries):
        j = rng.randrange(len(nss))
        ns = nss[j]
        other = rng.randrange(len(nss))
        query = rng.choice(
            [
                f"{_tag(other)} note {rng.randrange(12)}",
                _sentence(rng, rng.randint(1, 8)),
                "the same sentence in every namespace",
                rng.choice(QA)[0],
            ]
        )
        r = rng.random()
        op = "ask" if r < ask_share else "search" if r < 0.6 else "route"
        counts[op] += 1
        where = f"query {q} ({op}) in namespace {j}"
        if op == "search":
            hits = mem.search(ns, query, k=rng.choice([1, 5, 20, 50]))
            results["search_hits"] += len(hits)
            for h in hits:
                if h.id not in ids[ns] or h.metadata.get("owner") != j:
                    leaks.append(f"{where}: hit {h.id} owner {h.metadata.get('owner')}")
        elif op == "route":
            d = mem.route(ns, query)
            results["route_candidates"] += len(d.candidates)
            for c in d.candidates:
                if c.module_id not in modules[ns]:
                    leaks.append(f"{where}: candidate module {c.module_id}")
            for key in d.keys:
                results["route_keys"] += 1
                if key.module_id not in modules[ns] or (
                    key.record_id and key.record_id not in ids[ns]
                ):
                    leaks.append(f"{where}: key {key.module_id}/{key.record_id}")
        else:
            mode = rng.choice(["rag", "hybrid", "lora"])
            ans = mem.ask(ns, query, mode=mode, max_new_tokens=4)
            results["ask_sources"] += len(ans.sources)
            results["ask_with_module"] += bool(ans.modules)
            for h in ans.sources:
                if h.id not in ids[ns] or h.metadata.get("owner") != j:
                    leaks.append(f"{where}: source {h.id} owner {h.metadata.get('owner')}")
            for mid in ans.modules:
                if mid not in modules[ns]:
                    leaks.append(f"{where}: answered with module {mid}")
    seconds = time.time() - t0
    # the records per namespace: exactly what was written there, nothing shared
    per_ns_problems = []
    for j, ns in enumerate(nss):
        recs = mem.get(ns)
        if {r.id for r in recs} != ids[ns] or any(r.metadata.get("owner") != j for r in recs):
            per_ns_problems.append(f"namespace {j}: records differ from what was written")
    listed = mem.namespaces()
    if sorted(listed) != sorted(nss):
        per_ns_problems.append(f"namespaces() lists {len(listed)} names, {len(nss)} written")
    disk = check_disk(mem.path, parent)
    return {
        "namespaces": len(nss),
        "namespaces_with_modules": sum(1 for v in modules.values() if v),
        "queries": queries,
        "by_op": dict(counts),
        "results_checked": dict(results),
        "cross_namespace_results": len(leaks),
        "leaks": leaks[:20],
        "store_problems": per_ns_problems,
        "disk": disk,
        "seconds": round(seconds, 1),
        "ok": not leaks and not per_ns_problems and not disk["problems"],
    }


_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


def check_disk(store: Path, parent: Path | None) -> dict[str, Any]:
    """Every path under the store resolves inside it; no raw namespace reached a file name;
    ``parent`` (the store's own parent dir) holds nothing but the store."""
    root = store.resolve()
    problems = []
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            n += 1
            p = Path(dirpath) / name
            real = p.resolve()
            if root not in real.parents and real != root:
                problems.append(f"{p} resolves outside the store: {real}")
            if p.is_symlink():
                problems.append(f"{p} is a symlink")
            if not _SAFE_NAME.fullmatch(name):  # a raw namespace never names a file
                problems.append(f"unexpected file name {name!r} in {dirpath}")
    mods = root / "modules"
    if mods.exists():
        for d in mods.iterdir():
            if not d.name.startswith("lm-"):
                problems.append(f"modules/{d.name} is not an encoded namespace")
    if parent is not None:
        extra = [p.name for p in parent.iterdir() if p.resolve() != root]
        if extra:
            problems.append(f"created next to the store: {extra}")
    return {"paths_checked": n, "problems": problems}


# =============================================================================================
# 5. fuzz
# =============================================================================================
# Untyped errors already reported (each pinned by a strict xfail test in
# tests/reliability/test_fuzz.py); the fuzzer counts them apart so it can find new ones.
# (operation, exception type, message fragment)
KNOWN_BUGS: list[tuple[str, str, str]] = []  # the five found in memory.py are fixed


def _known(op: str, e: BaseException) -> bool:
    return any(op == o and type(e).__name__ == t and frag in str(e) for o, t, frag in KNOWN_BUGS)


def _snapshot(mem: Any) -> dict[str, dict[str, tuple[str, str]]]:
    snap = {}
    for ns in mem.namespaces():
        snap[ns] = {r.id: (r.text, json.dumps(r.metadata, sort_keys=True)) for r in mem.get(ns)}
    return snap


def fuzz_strategies(cli_dirs: dict[str, str]) -> Any:
    """A hypothesis strategy of (operation, kwargs) pairs, mostly hostile."""
    from hypothesis import strategies as st

    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.binary(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.just(object()),
        st.just(10**400),
    )
    text = st.one_of(
        st.text(max_size=60),
        st.text(alphabet=st.characters(exclude_categories=()), max_size=30),  # any code point
        st.text(  # lone surrogates, NUL, bidi overrides, astral characters
            alphabet=st.sampled_from(
                ["\ud800", "\udfff", "\x00", "\u202e", "🙂", "名", " ", "\n", "a", "$", "/", "."]
            ),
            max_size=20,
        ),
        st.sampled_from(["", " ", "\n\t", "\x00", "\ud800", "ok text", "..", "../../x"]),
        st.builds(lambda n: "y" * n, st.sampled_from([4095, 8192, 8193, 20_001, 200_001])),
    )
    valid_text = st.one_of(
        st.sampled_from(["keep a 3", "keep b 1", "A document kept safe.", "locker code"]),
        st.builds(" ".join, st.lists(st.sampled_from(WORDS), min_size=1, max_size=12)),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
    )
    text_or_junk = st.one_of(valid_text, valid_text, valid_text, text, text, junk)
    valid_ns = st.sampled_from(["keep-a", "keep-b", "fuzz", "../fuzz", "名前", "a/b"])
    namespace = st.one_of(
        valid_ns,
        valid_ns,
        valid_ns,
        st.sampled_from(["nul\x00", "x" * 4097, "", "\ud800"]),
        text_or_junk,
    )
    meta_value = st.one_of(
        st.text(max_size=10),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        junk,
    )
    meta_key = st.one_of(
        st.text(max_size=10),
        st.sampled_from(["kind", "status", "$and", "\ud800", "k" * 129, "owner"]),
        junk.filter(lambda v: v is None or isinstance(v, (int, bool, float, bytes))),
    )
    metadata = st.one_of(st.none(), st.dictionaries(meta_key, meta_value, max_size=3), junk)
    when = st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.datetimes(),
        junk,
    )
    k = st.one_of(
        st.integers(min_value=1, max_value=20),
        st.integers(min_value=1, max_value=20),
        st.integers(min_value=-3, max_value=1200),
        junk,
    )
    good_labels = st.sampled_from(["user", "assistant", "system", "tool", "s1"])
    label = st.one_of(st.none(), st.none(), good_labels, good_labels, text, junk)
    where = st.one_of(
        st.none(),
        st.dictionaries(
            meta_key,
            st.one_of(
                meta_value,
                st.dictionaries(
                    st.sampled_from(["$eq", "$in", "$gt", "$bad", "$and"]), meta_value, max_size=2
                ),
            ),
            max_size=2,
        ),
        junk,
    )

    def opt(**kw: Any) -> Any:  # any subset of the keyword arguments
        return st.fixed_dictionaries({}, optional=kw)

    turn = st.one_of(
        st.fixed_dictionaries(
            {"content": text_or_junk},
            optional={"role": label, "session_id": label, "metadata": metadata, "created_at": when},
        ),
        st.dictionaries(
            st.one_of(
                st.text(max_size=8),
                junk.filter(lambda v: v is None or isinstance(v, (int, bool, float, bytes))),
            ),
            text_or_junk,
            max_size=3,
        ),
        junk,
    )
    ids = st.one_of(st.none(), st.lists(text_or_junk, max_size=3), junk, text)
    ops = {
        "add_turn": st.fixed_dictionaries(
            {"namespace": namespace, "content": text_or_junk},
            optional={"role": label, "session_id": label, "metadata": metadata, "created_at": when},
        ),
        "add_turns": st.fixed_dictionaries(
            {"namespace": namespace, "turns": st.one_of(st.lists(turn, max_size=4), junk, text)},
            optional={"batch_size": k},
        ),
        "add_document": st.fixed_dictionaries(
            {"namespace": namespace, "text": text_or_junk},
            optional={
                "source": label,
                "session_id": label,
                "metadata": metadata,
                "created_at": when,
            },
        ),
        "search": st.fixed_dictionaries(
            {"namespace": namespace, "query": text_or_junk},
            optional={
                "k": k,
                "kind": label,
                "session_id": label,
                "role": label,
                "status": label,
                "since": when,
                "until": when,
                "where": where,
            },
        ),
        "get": st.fixed_dictionaries(
            {"namespace": namespace},
            optional={
                "ids": ids,
                "kind": label,
                "session_id": label,
                "status": label,
                "limit": k,
                "offset": k,
            },
        ),
        "ask": st.fixed_dictionaries(
            {"namespace": namespace, "question": text_or_junk},
            optional={
                "mode": st.one_of(label, st.sampled_from(["rag", "base", "icl", "lora", "hybrid"])),
                "k": k,
                "max_new_tokens": st.one_of(st.sampled_from([1, 2, 4]), k),
            },
        ),
        "recall": st.fixed_dictionaries(
            {"namespace": namespace, "query": text_or_junk},
            optional={"max_new_tokens": st.one_of(st.sampled_from([1, 2, 4]), k)},
        ),
        "route": st.fixed_dictionaries({"namespace": namespace, "query": text_or_junk}),
    }
    api = st.one_of(*[st.tuples(st.just(name), s) for name, s in ops.items()])
    cli = st.tuples(st.just("cli"), cli_argv(cli_dirs))
    return st.one_of(api, api, api, cli)


def cli_argv(dirs: dict[str, str]) -> Any:
    """argv lists for ``main``: real commands (not ``models pull``/``calibrate``, which fetch
    or train for minutes), store dirs good and bad, options right and wrong."""
    from hypothesis import strategies as st

    token = st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            [
                "-n",
                "--namespace",
                "-k",
                "--json",
                "--text",
                "--file",
                "--jsonl",
                "--mode",
                "--role",
                "--session",
                "--kind",
                "--all",
                "--min-records",
                "--chroma-url",
                "--explain",
                "--max-new-tokens",
                "--source",
                "--help",
                "-v",
                "--version",
                "0",
                "-1",
                "999999",
                "nan",
                "rag",
                "base",
                "user",
                "keep-a",
                "fuzz",
                "../x",
                "\x00",
                "http://127.0.0.1:1",
                "ftp://x",
                *dirs.values(),
            ]
        ),
    )
    command = st.sampled_from(
        ["init", "add", "search", "ask", "consolidate", "modules", "status", "models", "bogus", ""]
    )
    store_dir = st.one_of(st.sampled_from(list(dirs.values())), st.text(max_size=10))
    anything = st.builds(
        lambda c, d, rest: [c, d, *rest], command, store_dir, st.lists(token, max_size=6)
    )
    arg = st.one_of(
        st.sampled_from(["keep-a", "fuzz", "locker code", "a/b", "../x", "名前", " ", "-x"]),
        st.text(max_size=15),
    )
    flags = st.lists(
        st.sampled_from(
            [
                ["--json"],
                ["-k", "3"],
                ["-k", "0"],
                ["--kind", "turn"],
                ["--session", "s1"],
                ["--mode", "rag"],
                ["--mode", "base"],
                ["--mode", "lora"],
                ["--explain"],
                ["--role", "assistant"],
                ["--min-records", "1"],
                ["--chroma-url", "http://127.0.0.1:9"],
            ]
        ),
        max_size=3,
    ).map(lambda fs: [t for f in fs for t in f])
    file_arg = st.sampled_from([*dirs.values(), "/nonexistent/file", "\x00"])
    structured = st.one_of(
        st.builds(
            lambda d, n, t, f: ["add", d, "-n", n, "--text", t, *f], store_dir, arg, arg, flags
        ),
        st.builds(
            lambda d, n, t, f: ["add", d, "-n", n, "--file", t, *f], store_dir, arg, file_arg, flags
        ),
        st.builds(
            lambda d, n, t, f: ["add", d, "-n", n, "--jsonl", t, *f],
            store_dir,
            arg,
            file_arg,
            flags,
        ),
        st.builds(lambda d, n, q, f: ["search", d, "-n", n, q, *f], store_dir, arg, arg, flags),
        st.builds(lambda d, n, q, f: ["ask", d, "-n", n, q, *f], store_dir, arg, arg, flags),
        st.builds(lambda d, n, f: ["consolidate", d, "-n", n, *f], store_dir, arg, flags),
        st.builds(lambda d, f: ["modules", d, *f], store_dir, flags),
        st.builds(lambda d, f: ["status", d, *f], store_dir, flags),
        st.builds(lambda d, f: ["init", d, *f], store_dir, flags),
    )
    return st.one_of(structured, structured, anything)


SAFE_CLI_TAIL = {
    # appended last, so argparse keeps them: consolidation stays a few steps, ask short
    "consolidate": ["--max-steps", "2", "--mixture", "original", "--writer", "none"],
    "ask": ["--max-new-tokens", "2"],
}


def _call(mem: Any, op: str, kw: Any) -> Any:
    if op == "cli":
        from lora_memory_plugin.cli.main import main

        argv = list(kw)
        if argv and argv[0] == "models":
            argv = ["models", "--bogus"]  # never fetch models; still parse
        argv += SAFE_CLI_TAIL.get(argv[0] if argv else "", [])
        argv = [a for a in argv if a != "-"]  # stdin is not ours to read
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                code = main(argv)
        except SystemExit as e:  # argparse: --help / --version (0) or a usage error (2)
            if e.code not in (0, 2):
                raise AssertionError(f"SystemExit({e.code!r}) from argparse") from e
            return f"exit_{e.code}"
        if not isinstance(code, int) or code not in (0, 1, 2, 3):
            raise AssertionError(f"main returned {code!r}")
        return f"exit_{code}"
    kw = dict(kw)
    ns = kw.pop("namespace")
    return getattr(mem, op)(ns, **kw)


def _expect_roundtrip(mem: Any, op: str, kw: dict[str, Any], result: Any) -> list[str]:
    """An accepted turn must read back as given: text, role, session and metadata."""
    if op != "add_turn":
        return []
    from lora_memory_plugin.types import Record

    [rec] = mem.get(kw["namespace"], [result])
    assert isinstance(rec, Record)
    bad = []
    if rec.text != kw["content"]:
        bad.append("text differs")
    created = rec.metadata.get("created_at")
    if not isinstance(created, float) or not math.isfinite(created):
        bad.append(f"created_at read back as {created!r}")
    for key, value in (kw.get("metadata") or {}).items():
        got = rec.metadata.get(key)
        same = got == value and type(got) is type(value)
        if not same and not (isinstance(value, float) and math.isnan(value) and got != got):
            bad.append(f"metadata[{key!r}] = {value!r} read back as {got!r}")
    return bad


def run_fuzz(
    mem: Any, cli_dirs: dict[str, str], *, examples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Hypothesis-generated calls; returns what escaped untyped and what changed in the store."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hyp_seed

    from lora_memory_plugin import LoraMemoryError

    before = _snapshot(mem)
    outcomes: Counter[str] = Counter()
    untyped: list[str] = []
    known: Counter[str] = Counter()
    roundtrip: list[str] = []
    written: dict[str, set[str]] = {}
    t0 = time.time()

    @hyp_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_strategies(cli_dirs))
    def one(case: tuple[str, Any]) -> None:
        op, kw = case
        try:
            result = _call(mem, op, kw)
        except LoraMemoryError as e:
            outcomes[f"{op}: {type(e).__name__}"] += 1
            return
        except Exception as e:
            if _known(op, e):
                known[f"{op}: {type(e).__name__}: {str(e)[:60]}"] += 1
                return
            outcomes[f"{op}: UNTYPED {type(e).__name__}"] += 1
            untyped.append(
                f"{op}({_short(kw)}) -> {type(e).__name__}: {e}\n"
                + "".join(traceback.format_exc().splitlines(True)[-6:])
            )
            return
        outcomes[f"{op}: ok" if op != "cli" else f"cli: {result}"] += 1
        if op in ("add_turn", "add_turns", "add_document"):
            ids = [result] if isinstance(result, str) else list(result)
            written.setdefault(kw["namespace"], set()).update(ids)
            roundtrip.extend(
                f"{op}({_short(kw)}): {b}" for b in _expect_roundtrip(mem, op, kw, result)
            )

    # The CLI gets relative store dirs too: keep what they create out of the caller's cwd.
    scratch = Path(tempfile.mkdtemp(prefix="lm-fuzz-cwd-"))
    cwd = Path.cwd()
    os.chdir(scratch)
    try:
        one()
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
    after = _snapshot(mem)
    lost, changed = [], []
    for ns, recs in before.items():
        for rid, value in recs.items():
            if rid not in after.get(ns, {}):
                lost.append(f"{ns!r}/{rid}")
            elif after[ns][rid] != value:
                changed.append(f"{ns!r}/{rid}")
    return {
        "examples": examples,
        "calls": sum(outcomes.values()) + sum(known.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "untyped": len(untyped),
        "untyped_examples": untyped[:20],
        "known_bugs_hit": dict(known),
        "records_before": sum(len(v) for v in before.values()),
        "records_after": sum(len(v) for v in after.values()),
        "lost": len(lost),
        "changed": len(changed),
        "lost_examples": lost[:10],
        "changed_examples": changed[:10],
        "roundtrip_failures": len(roundtrip),
        "roundtrip_examples": roundtrip[:20],
        "seconds": round(time.time() - t0, 1),
        "ok": not untyped and not lost and not changed and not roundtrip,
    }


def _short(kw: Any) -> str:
    return repr(kw)[:300]


def fill_fuzz_store(mem: Any) -> None:
    """Records the fuzzer must leave alone (and may add to)."""
    mem.add_turns("keep-a", [{"content": f"keep a {i}", "metadata": {"n": i}} for i in range(20)])
    mem.add_turns("keep-b", [{"content": f"keep b {i}", "role": "assistant"} for i in range(5)])
    mem.add_document("keep-b", "A document kept safe. " * 40, source="doc.md")


# =============================================================================================
# 7. Chroma server faults
# =============================================================================================
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chroma_bin() -> str:
    exe = Path(sys.executable).with_name("chroma")
    return str(exe) if exe.exists() else (shutil.which("chroma") or "chroma")


class ChromaServer:
    """A ``chroma run`` that can be killed and restarted on the same data and port."""

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.data = data
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        logf = open(self.data / f"server-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                chroma_bin(),
                "run",
                "--path",
                str(self.data / "db"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        logf.close()
        self.starts += 1
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.proc.kill()
                    raise RuntimeError(f"chroma server did not start on {self.url}") from None
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _record_complete(mem: Any, ns: str, rid: str, text: str) -> list[str]:
    """A present record must be whole: text, metadata, and an embedding."""
    col = mem.buffer._collection(ns, create=False)
    got = col.get(ids=[rid], include=["documents", "metadatas", "embeddings"])
    if not got["ids"]:
        return []
    bad = []
    if got["documents"][0] != text:
        bad.append(f"{rid}: text {got['documents'][0]!r}")
    meta = got["metadatas"][0] or {}
    for key in ("kind", "role", "created_at", "content_hash", "status"):
        if key not in meta:
            bad.append(f"{rid}: metadata lacks {key}")
    emb = got["embeddings"]
    if emb is None or len(emb[0]) != 384:
        bad.append(f"{rid}: no embedding")
    return bad


def run_server_faults(
    work: Path, *, rounds: int = 20, seed: int = 0, down_reads: bool = True
) -> dict[str, Any]:
    """Kill the Chroma server under a writer, ``rounds`` times; check the store after each."""
    from lora_memory_plugin import BackendError, LoRAMemory

    rng = random.Random(seed)
    server = ChromaServer(work / "chroma")
    server.start()
    problems: list[str] = []
    stats: Counter[str] = Counter()
    error_seconds: list[float] = []
    try:
        mem = LoRAMemory.open(work / "store", chroma_url=server.url)
        ns = "srv"
        acked: dict[str, str] = {}
        base = [f"baseline {i}: {_sentence(rng)}" for i in range(30)]
        acked.update(zip(mem.add_turns(ns, [{"content": t} for t in base]), base, strict=True))
        counter = 0
        for rnd in range(rounds):
            stop = threading.Event()
            failed: list[tuple[list[str], BaseException, float]] = []

            def write_until_error(
                rnd: int = rnd, stop: threading.Event = stop, failed: list[Any] = failed
            ) -> None:
                nonlocal counter
                while not stop.is_set():
                    batch = rng.random() < 0.5
                    n = rng.randint(2, 60) if batch else 1
                    texts = [
                        f"round {rnd} write {counter + i}: {_sentence(rng, 5)}" for i in range(n)
                    ]
                    counter += n
                    t = time.time()
                    try:
                        if batch:
                            got = mem.add_turns(
                                ns,
                                [{"content": x} for x in texts],
                                batch_size=rng.choice([7, 16, 256]),
                            )
                        else:
                            got = [mem.add_turn(ns, texts[0])]
                        acked.update(zip(got, texts, strict=True))
                    except BaseException as e:  # classified below
                        failed.append((texts, e, time.time() - t))
                        return

            th = threading.Thread(target=write_until_error, daemon=True)
            th.start()
            time.sleep(rng.uniform(0.05, 0.6))
            sig = signal.SIGKILL if rnd % 2 == 0 else signal.SIGTERM
            server.stop(sig)
            th.join(timeout=120)
            if th.is_alive():
                problems.append(f"round {rnd}: writer still blocked 120 s after the server died")
                stop.set()
                th.join(timeout=300)
            stats[f"killed_with_{signal.Signals(sig).name}"] += 1
            if not failed:
                problems.append(f"round {rnd}: the writer never saw an error")
                continue
            texts, err, secs = failed[0]
            error_seconds.append(secs)
            stats[f"write_error_{type(err).__name__}"] += 1
            if not isinstance(err, BackendError):
                problems.append(f"round {rnd}: write raised {type(err).__name__}: {err}")
            if down_reads:
                for name, call in (
                    ("search", lambda: mem.search(ns, "baseline", k=3)),
                    ("get", lambda: mem.get(ns, limit=3)),
                    ("count", lambda: mem.count(ns)),
                    ("add_turn", lambda r=rnd: mem.add_turn(ns, f"while down {r}")),
                ):
                    try:
                        call()
                        problems.append(f"round {rnd}: {name} succeeded with the server down")
                    except BackendError:
                        stats[f"down_{name}_BackendError"] += 1
                    except Exception as e:
                        problems.append(
                            f"round {rnd}: {name} while down raised {type(e).__name__}: {e}"
                        )
            server.start()
            # everything acknowledged is there, once, intact
            recs = mem.get(ns)
            have = {r.id: r.text for r in recs}
            if len(have) != len(recs):
                problems.append(f"round {rnd}: duplicate ids")
            for rid, text in acked.items():
                if have.get(rid) != text:
                    problems.append(f"round {rnd}: acknowledged {rid} lost or changed")
            # the interrupted call: each record absent or complete, never half
            from lora_memory_plugin.store.records import NewRecord

            ids = [NewRecord(t, "turn", role="user").id for t in texts]
            present = sum(1 for i in ids if i in have)
            stats["interrupted_records"] += len(ids)
            stats["interrupted_records_present"] += present
            for rid, text in zip(ids, texts, strict=True):
                problems += [f"round {rnd}: {b}" for b in _record_complete(mem, ns, rid, text)]
            # retrying the interrupted call completes it without duplicates
            got = mem.add_turns(ns, [{"content": t} for t in texts])
            acked.update(zip(got, texts, strict=True))
            recs = mem.get(ns)
            if len(recs) != len(acked) or {r.id for r in recs} != set(acked):
                problems.append(
                    f"round {rnd}: after the retry {len(recs)} records, {len(acked)} acknowledged"
                )
            probe = rng.choice(list(acked.values()))
            hit = mem.search(ns, probe, k=1)
            if not hit or hit[0].text != probe:
                problems.append(f"round {rnd}: search after restart missed {probe!r}")
            stats["rounds"] += 1
        final = mem.count(ns)
    finally:
        server.stop(signal.SIGTERM)
    return {
        "rounds": rounds,
        "server_restarts": server.starts - 1,
        "stats": dict(stats),
        "records_final": final,
        "records_acknowledged": len(acked),
        "error_seconds_max": round(max(error_seconds), 3) if error_seconds else None,
        "error_seconds_median": round(sorted(error_seconds)[len(error_seconds) // 2], 3)
        if error_seconds
        else None,
        "problems": problems[:30],
        "ok": not problems,
    }


# =============================================================================================
# driver
# =============================================================================================
# ---- forget on the default model ------------------------------------------------------------
def _hits(mem: Any, ns: str, facts: list[Any], mode: str) -> list[bool]:
    from lora_memory_plugin.bench._common import hit

    answers = mem.ask_many(ns, [f.question for f in facts], mode=mode, max_new_tokens=16)
    return [hit(f.answer, a.text) for f, a in zip(facts, answers, strict=True)]


def run_forget(
    work: Path, base_model: str, *, facts: int = 8, forget: int = 2, seed: int = 0
) -> dict[str, Any]:
    """PhoneBook facts consolidated on ``base_model``; ``forget`` of them are forgotten (the module
    is rebuilt from the rest). A second namespace holds two more facts and must not change."""
    from lora_memory_plugin import LoRAMemory
    from lora_memory_plugin.datasets.phonebook import phonebook

    mem = LoRAMemory.open(work / "store", base_model=base_model)
    items = phonebook(facts + 2, seed=seed)
    mine, theirs = items[:facts], items[facts:]
    ids = mem.add_turns("ns", [{"content": f.text} for f in mine])
    mem.add_turns("other", [{"content": f.text} for f in theirs])
    t0 = time.time()
    [r1] = mem.consolidate("ns", seed=seed)
    [r2] = mem.consolidate("other", seed=seed)
    log(f"   consolidated: {r1.status} / {r2.status} in {time.time() - t0:.0f} s")
    gone, kept = mine[:forget], mine[forget:]
    before = {
        "lora_forgotten": _hits(mem, "ns", gone, "lora"),
        "lora_kept": _hits(mem, "ns", kept, "lora"),
        "base_forgotten": _hits(mem, "ns", gone, "base"),
        "other_lora": _hits(mem, "other", theirs, "lora"),
    }
    other_modules = sorted(m.module_id for m in mem.modules("other"))
    old_modules = sorted(m.module_id for m in mem.modules("ns"))
    t1 = time.time()
    report = mem.forget("ns", ids[:forget], seed=seed)
    forget_s = time.time() - t1
    after = {
        "lora_forgotten": _hits(mem, "ns", gone, "lora"),
        "lora_kept": _hits(mem, "ns", kept, "lora"),
        "base_forgotten": _hits(mem, "ns", gone, "base"),
        "rag_forgotten": _hits(mem, "ns", gone, "rag"),
        "other_lora": _hits(mem, "other", theirs, "lora"),
    }
    in_search = sum(
        any(f.answer in h.text for h in mem.search("ns", f.question, k=10)) for f in gone
    )
    new_modules = mem.modules("ns")
    held = {rid for m in new_modules for rid in m.record_ids}
    problems = []
    if sum(before["lora_forgotten"]) < len(gone):
        problems.append(f"only {sum(before['lora_forgotten'])}/{len(gone)} known before forget")
    if sum(after["lora_forgotten"]) > sum(after["base_forgotten"]):
        problems.append("a forgotten fact is recalled above the base model's level")
    if sum(after["lora_kept"]) < 0.95 * len(kept):
        problems.append(f"kept facts {sum(after['lora_kept'])}/{len(kept)} < 95%")
    if in_search or any(after["rag_forgotten"]):
        problems.append("a forgotten value is still in the buffer")
    if held & set(ids[:forget]) or set(old_modules) & {m.module_id for m in new_modules}:
        problems.append("a module holding a forgotten record is still live")
    if sorted(m.module_id for m in mem.modules("other")) != other_modules:
        problems.append("the other namespace's modules changed")
    if after["other_lora"] != before["other_lora"]:
        problems.append("the other namespace's answers changed")
    rate = {  # fraction of facts answered, per phase and check
        ph: {k: sum(v) / len(v) for k, v in d.items()}
        for ph, d in (("before", before), ("after", after))
    }
    return {
        "facts": facts,
        "forgotten": forget,
        "modules_before": len(old_modules),
        "modules_after": len(new_modules),
        "forget_report": {
            "deleted": report.deleted,
            "modules_removed": len(report.modules_removed),
            "records_reset": report.records_reset,
            "rebuild": report.rebuild.status if report.rebuild else None,
        },
        "forget_seconds": round(forget_s, 1),
        "recall": rate,
        "forgotten_in_search": in_search,
        "problems": problems,
        "ok": not problems,
    }


# ---- adapter integrity -------------------------------------------------------------------------
DAMAGES = ("corrupt", "swap")
OTHER_BASE = "base"


def run_integrity(mem: Any, *, rounds: int = 10) -> dict[str, Any]:
    """Each round damages a fresh module in each way (flipped bytes in the weights, another
    module's valid weights): the next question must fall back to rag and say why, ``status``
    must list the module as quarantined, nothing may load it, and the next consolidation must
    retrain its records into a new module that answers. A module whose manifest names other
    base weights is no damage (another process on that base model uses it): the question must
    fall back to rag and say why, the module must stay listed, unquarantined and unchanged, and
    the next consolidation must leave it alone."""
    from lora_memory_plugin.bench._common import hit
    from lora_memory_plugin.registry import modules as registry

    donor_ns = "donor"
    mem.add_turns(
        donor_ns, [{"content": "Question: What is the code of the donor box? Answer: 5150"}]
    )
    mem.consolidate(donor_ns, **FAST_CONSOLIDATION)
    [donor] = mem.modules(donor_ns)
    donor_weights = (
        registry.modules_root(mem.path, donor_ns) / donor.module_id / registry.ADAPTER_WEIGHTS
    )
    stats = {f"{d}_{k}": 0 for d in DAMAGES for k in ("rounds", "caught", "retrained")}
    stats |= {f"{OTHER_BASE}_{k}": 0 for k in ("rounds", "skipped", "kept")}
    problems = []
    for r in range(rounds):
        for damage in (*DAMAGES, OTHER_BASE):
            ns = f"r{r}-{damage}"
            q, a = f"What is the code of box {r}{damage}?", f"{1000 + 97 * r + len(damage)}"
            mem.add_turns(ns, [{"content": f"Question: {q} Answer: {a}"}])
            mem.consolidate(ns, **FAST_CONSOLIDATION)
            [m] = mem.modules(ns)
            d = registry.modules_root(mem.path, ns) / m.module_id
            weights = d / registry.ADAPTER_WEIGHTS
            if damage == "corrupt":
                data = bytearray(weights.read_bytes())
                pos = random.Random(r).randrange(len(data) // 2, len(data))
                data[pos] ^= 0xFF
                weights.write_bytes(bytes(data))
            elif damage == "swap":
                weights.write_bytes(donor_weights.read_bytes())
            else:
                manifest = json.loads((d / registry.MANIFEST).read_text())
                manifest["base_fingerprint"] = f"{r:064x}"
                (d / registry.MANIFEST).write_text(json.dumps(manifest))
            stats[f"{damage}_rounds"] += 1
            if damage == OTHER_BASE:
                problems += _other_base_is_skipped(mem, ns, q, d, stats, r)
                continue
            ans = mem.ask(ns, q, mode="lora", max_new_tokens=8)
            [st] = [n for n in mem.status().namespaces if n.namespace == ns]
            caught = (
                ans.mode == "rag"
                and any("quarantined" in n for n in ans.notes)
                and mem.modules(ns) == []
                and [x["module_id"] for x in st.quarantined] == [m.module_id]
            )
            stats[f"{damage}_caught"] += caught
            if not caught:
                problems.append(f"round {r} {damage}: answered as {ans.mode}, notes {ans.notes}")
                continue
            [rep] = mem.consolidate(ns, **FAST_CONSOLIDATION)
            fixed = rep.status == "consolidated" and hit(
                a, mem.ask(ns, q, mode="lora", max_new_tokens=8).text
            )
            stats[f"{damage}_retrained"] += fixed
            if not fixed:
                problems.append(f"round {r} {damage}: re-consolidation {rep.status}")
    return {"rounds": rounds, "stats": stats, "problems": problems, "ok": not problems}


def _other_base_is_skipped(
    mem: Any, ns: str, q: str, d: Path, stats: dict[str, int], r: int
) -> list[str]:
    """The module in ``d`` names other base weights: skipped, kept, not retrained."""
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    ans = mem.ask(ns, q, mode="lora", max_new_tokens=8)
    [st] = [n for n in mem.status().namespaces if n.namespace == ns]
    skipped = (
        ans.mode == "rag"
        and any("another base model" in n for n in ans.notes)
        and [m.module_id for m in mem.modules(ns)] == [d.name]
        and st.quarantined == ()
    )
    stats[f"{OTHER_BASE}_skipped"] += skipped
    if not skipped:
        return [f"round {r} {OTHER_BASE}: answered as {ans.mode}, notes {ans.notes}"]
    [rep] = mem.consolidate(ns, **FAST_CONSOLIDATION)
    kept = rep.status == "nothing_to_do" and {p.name: p.read_bytes() for p in d.iterdir()} == files
    stats[f"{OTHER_BASE}_kept"] += kept
    return [] if kept else [f"round {r} {OTHER_BASE}: consolidation {rep.status} changed it"]


@contextlib.contextmanager
def _tmp(keep: bool) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lm-reliability-"))
    try:
        yield d
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--part",
        choices=["concurrency", "isolation", "fuzz", "server", "forget", "integrity", "all"],
        default="all",
    )
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
        out = launch(cfg)
        (Path(cfg["work"]) / "launch.json").write_text(json.dumps(out))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _env import base_environment

    from lora_memory_plugin import LoRAMemory
    from lora_memory_plugin.testing import build_tiny_model, sharpen_model

    every = ["concurrency", "isolation", "fuzz", "server", "forget", "integrity"]
    parts = every if args.part == "all" else [args.part]
    prior = json.loads(args.out.read_text()) if args.out.exists() else {}
    report: dict[str, Any] = {"results": prior.get("results", {})}
    with _tmp(args.keep) as tmp:
        tiny = str(build_tiny_model(tmp / "tiny"))
        for part in parts:
            log(f"== {part}")
            t0 = time.time()
            if part == "concurrency":
                res = run_concurrency(
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
                built = build_isolation_store(mem)
                res = run_isolation(
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
                fill_fuzz_store(mem)
                (tmp / "fuzz" / "a-file").write_text("not a store")
                dirs = {
                    "store": str(mem.path),
                    "new": str(tmp / "fuzz" / "new"),
                    "file": str(tmp / "fuzz" / "a-file"),
                    "nul": str(tmp / "fuzz" / "a\0b"),
                }
                res = run_fuzz(mem, dirs, examples=args.examples, seed=args.seed)
                config = {"examples": args.examples}
            elif part == "forget":
                res = run_forget(
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
                res = run_integrity(mem, rounds=args.integrity_rounds)
                config = {"rounds": args.integrity_rounds}
            else:
                res = run_server_faults(tmp / "server", rounds=args.rounds, seed=args.seed)
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


if __name__ == "__main__":
    sys.exit(main())
