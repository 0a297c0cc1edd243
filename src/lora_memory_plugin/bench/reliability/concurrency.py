"""The ``concurrency`` part: ``writers`` forked processes each call ``add_turn`` ``turns`` times on
one embedded store and namespace while ``consolidators`` processes consolidate that namespace in
a loop (the API and the CLI in turn); then a deterministic race in which B tries the API and the
CLI while A is inside its run. Every worker is forked from one warm launcher process
(:func:`launch`, run as ``python -m lora_memory_plugin.bench.reliability --_launch CONFIG``)."""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...cli.main import main
from ...config import ModelConfig
from ...consolidation import engine
from ...errors import LockHeldError
from ...generation.backend import get_generator
from ...memory import LoRAMemory
from ...registry.modules import list_modules
from ...testing import wait_for_single_thread
from ._shared import CHEAP_CONSOLIDATION, sentence

# The launcher: this package's entry point with --_launch (see launch).
LAUNCHER = "lora_memory_plugin.bench.reliability"


def writer_text(w: int, i: int) -> str:
    return f"writer {w} turn {i}: " + sentence(random.Random(w * 1_000_003 + i), 6)


def _child_writer(cfg: dict[str, Any], w: int) -> dict[str, Any]:
    mem = LoRAMemory.open(cfg["store"], create=False)
    ids: list[str | None] = []
    errors: list[str] = []
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

    engine._run = timed
    return runs


def _child_consolidator(cfg: dict[str, Any], c: int) -> dict[str, Any]:
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
    work = Path(cfg["work"])
    runs = _timed_runs(marker_dir=work, hold_for=work / "b_done")
    mem = LoRAMemory.open(cfg["store"], create=False)
    [rep] = mem.consolidate(cfg["namespace"], **CHEAP_CONSOLIDATION)
    return {"status": rep.status, "modules_created": list(rep.modules_created), "runs": runs}


def _child_race_b(cfg: dict[str, Any]) -> dict[str, Any]:
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
    import torch  # noqa: PLC0415 (heavy; loaded after the environment above is set)

    torch.set_num_threads(1)
    # warmed here, once, so that no forked child imports them
    from ...consolidation import trainer  # noqa: F401, PLC0415
    from ...store.embedder import MiniLMEmbeddingFunction  # noqa: PLC0415 (loads chromadb)

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
        pids[_fork(functools.partial(_child_writer, cfg, w), res / f"writer-{w}.json")] = (
            f"writer-{w}"
        )
    for c in range(cfg["consolidators"]):
        name = f"consolidator-{c}"
        pids[_fork(functools.partial(_child_consolidator, cfg, c), res / f"{name}.json")] = name
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
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    ns = "shared"
    mem = LoRAMemory.open(store, base_model=base_model)
    seed = [f"seed record {i}: " + sentence(random.Random(-i - 1)) for i in range(seed_records)]
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
        [sys.executable, "-m", LAUNCHER, "--_launch", str(work / "config.json")],
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


def check_concurrency(  # noqa: PLR0917
    mem: Any,
    ns: str,
    seed: list[str],
    seed_ids: list[str],
    launched: dict[str, Any],
    cfg: dict[str, Any],
) -> dict[str, Any]:
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
