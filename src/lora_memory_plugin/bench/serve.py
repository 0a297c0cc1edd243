"""``serve``: the memory service (``lora-memory serve``) under concurrent clients, and what
micro-batching of their questions buys.

The service runs as users run it, ``lora-memory serve STORE --no-auth`` in its own process, on a
store of a few pre-filled namespaces. (a) **Load**: C clients (threads, each its own
``RemoteMemory``) run N operations each in a fixed mix, 3 add_turn : 3 search : 2 get : 1 count :
1 ask (mode rag unless ``mode`` says otherwise), every client starting at its own point of the
cycle so the operations overlap; latency is measured at the client (HTTP included), errors
are counted (the target is none).
(b) **Micro-batching**: one client asks Q questions one at a time, then C clients ask the same
Q questions at once; the service gathers concurrent questions into one ``ask_many`` forward pass,
so questions/s should rise with C.

Sizes (``--set NAME=VALUE``; quick / full): ``clients`` 8 / 32, ``ops`` (per client) 10 / 100,
``questions`` 16 / 64, ``namespaces`` 4 / 8, ``prefill`` (turns per namespace) 20 / 100,
``new_tokens`` 8 / 16, ``max_batch`` (the service's ``--max-batch``) 16, ``mode`` (of every
question) rag. ``base_model`` (or ``--base-model``) picks the service's base model (default: the
store default).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..memory import LoRAMemory
from ..remote import RemoteMemory
from ..testing import ServiceProcess
from ._common import Context, md_table
from .write import Turn, latency_ms, make_queries, make_turns

NAME = "serve"
OPS = ("add_turn", "search", "get", "count", "ask")
# the fixed mix, as one cycle; client c starts at position c so every op runs at every moment
CYCLE = (
    "add_turn", "search", "get", "add_turn", "count",
    "search", "ask", "add_turn", "get", "search",
)  # fmt: skip
K = 5
GET_IDS = 2  # records per get
START_TIMEOUT_S = 180.0
MAX_ERROR_SAMPLES = 10


# ---- the service in its own process --------------------------------------------------------
@contextmanager
def service(store: Path, logs: Path, max_batch: int, wait_ms: float) -> Iterator[str]:
    """``lora-memory serve STORE --no-auth`` on a free loopback port; yields its URL once
    /v1/health answers, and stops it (SIGTERM, then SIGKILL) on exit."""
    server = ServiceProcess(
        store, logs, "--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms)
    )
    server.start(timeout=START_TIMEOUT_S)
    try:
        yield server.url
    finally:
        server.stop(signal.SIGTERM, timeout=30)


def health(url: str) -> dict[str, Any]:
    """``/v1/health``: liveness and the service's batching counters so far."""
    with urllib.request.urlopen(f"{url}/v1/health", timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def batching_stats(url: str) -> dict[str, int]:
    """How many batches and questions the service's ask batcher has answered so far."""
    b = health(url)["batching"]
    return {"batches": int(b["batches"]), "questions": int(b["questions"])}


def in_threads(n: int, work: Callable[[int], None]) -> float:
    """Run ``work(i)`` for i < n, each in its own thread, released together; the wall seconds
    from the release until the last one ends."""
    barrier = threading.Barrier(n + 1)
    failures: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as e:  # reported below, after the join
            failures.append(e)

    threads = [threading.Thread(target=body, args=(i,), name=f"bench-client-{i}") for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return wall


# ---- (a) load: the mixed operations ----------------------------------------------------------
class Client:
    """One client of the load phase: its namespace, the ids it may get, its timings."""

    def __init__(
        self, url: str, index: int, cfg: dict[str, Any], known: list[str], turns: list[str]
    ) -> None:
        self.remote = RemoteMemory(url, timeout=600)
        self.index = index
        self.ns = namespace(index % cfg["namespaces"])
        self.known = list(known)  # ids of this namespace: pre-filled, then its own writes
        self.rng = random.Random(cfg["seed"] * 1_000_003 + index)
        self.turns = turns  # its add_turn texts, distinct from every other client's
        self.queries = make_queries(cfg["ops"], cfg["seed"] + 11 + index)
        self.new_tokens = cfg["new_tokens"]
        self.mode = cfg["mode"]
        self.samples: dict[str, list[float]] = {op: [] for op in OPS}
        self.errors: list[tuple[str, str]] = []

    def call(self, op: str, i: int) -> None:
        r = self.remote
        if op == "add_turn":
            self.known.append(r.add_turn(self.ns, self.turns[i], session_id=f"c{self.index}"))
        elif op == "search":
            r.search(self.ns, self.queries[i], k=K)
        elif op == "get":
            ids = self.rng.sample(self.known, min(GET_IDS, len(self.known)))
            if len(r.get(self.ns, ids)) != len(ids):
                raise RuntimeError(f"get {ids}: wrong number of records")
        elif op == "count":
            r.count(self.ns)
        else:
            r.ask(self.ns, self.queries[i], mode=self.mode, k=K, max_new_tokens=self.new_tokens)

    def run(self, ops: int) -> None:
        for i in range(ops):
            op = CYCLE[(self.index + i) % len(CYCLE)]
            t0 = time.perf_counter()
            try:
                self.call(op, i)
            except Exception as e:  # counted: the target is no errors at all
                self.errors.append((op, f"{type(e).__name__}: {e}"[:300]))
                continue
            self.samples[op].append(time.perf_counter() - t0)


def load(
    ctx: Context,
    url: str,
    cfg: dict[str, Any],
    prefilled: dict[str, list[str]],
    turns: list[str],
) -> dict[str, Any]:
    """Phase (a): ``turns`` holds ``ops`` new turn texts for each client."""
    n, ops = cfg["clients"], cfg["ops"]
    ctx.log(f"serve: load, {n} clients x {ops} mixed operations")
    clients = [
        Client(url, c, cfg, prefilled[namespace(c % cfg["namespaces"])], turns[c * ops :])
        for c in range(n)
    ]
    before = batching_stats(url)
    try:
        wall = in_threads(n, lambda c: clients[c].run(ops))
        after = batching_stats(url)
    finally:
        for c in clients:
            c.remote.close()
    per_op: dict[str, Any] = {}
    for op in OPS:
        samples = [s for c in clients for s in c.samples[op]]
        failed = sum(1 for c in clients for o, _ in c.errors if o == op)
        per_op[op] = {
            "calls": len(samples) + failed,
            "errors": failed,
            "latency_ms": latency_ms(samples) if samples else None,
        }
    errors = [{"op": o, "error": e} for c in clients for o, e in c.errors]
    done = sum(len(s) for c in clients for s in c.samples.values())
    return {
        "wall_s": wall,
        "operations": done + len(errors),
        "ops_per_s": (done + len(errors)) / wall,
        "errors": len(errors),
        "error_samples": errors[:MAX_ERROR_SAMPLES],
        "per_op": per_op,
        "ask_batching": _delta(before, after),
    }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    batches = after["batches"] - before["batches"]
    questions = after["questions"] - before["questions"]
    return {
        "batches": batches,
        "questions": questions,
        "mean_batch": questions / batches if batches else None,
    }


# ---- (b) micro-batching: one client vs many ----------------------------------------------
def batching(ctx: Context, url: str, cfg: dict[str, Any]) -> dict[str, Any]:
    q, n, tokens = cfg["questions"], cfg["clients"], cfg["new_tokens"]
    questions = make_queries(q, cfg["seed"] + 3)
    where = [namespace(i % cfg["namespaces"]) for i in range(q)]
    answers: dict[str, list[str]] = {"one": [""] * q, "many": [""] * q}

    def ask(remote: RemoteMemory, who: str, i: int) -> None:
        a = remote.ask(where[i], questions[i], mode=cfg["mode"], k=K, max_new_tokens=tokens)
        answers[who][i] = a.text

    remotes = [RemoteMemory(url, timeout=600) for _ in range(n)]
    try:
        ctx.log(f"serve: micro-batching, {q} questions from 1 client, one at a time")
        before = batching_stats(url)
        t0 = time.perf_counter()
        for i in range(q):
            ask(remotes[0], "one", i)
        one_s = time.perf_counter() - t0
        mid = batching_stats(url)
        ctx.log(f"serve: micro-batching, the same {q} questions from {n} clients at once")

        def client(c: int) -> None:
            for i in range(c, q, n):
                ask(remotes[c], "many", i)

        many_s = in_threads(n, client)
        after = batching_stats(url)
    finally:
        for r in remotes:
            r.close()
    one_qps, many_qps = q / one_s, q / many_s
    same = sum(a == b for a, b in zip(answers["one"], answers["many"], strict=True))
    return {
        "questions": q,
        "one_client": {"clients": 1, "seconds": one_s, "qps": one_qps} | _delta(before, mid),
        "many_clients": {"clients": n, "seconds": many_s, "qps": many_qps} | _delta(mid, after),
        "speedup": many_qps / one_qps,
        "same_answers": same / q,
    }


def _gain_target() -> int:
    """The micro-batching gain the service should reach: 3x on CPU cores, 5x on a GPU."""
    import torch  # noqa: PLC0415 (the bench process; loaded already by the harness)

    return 5 if torch.cuda.is_available() else 3


# ---- the suite -------------------------------------------------------------------------------
def namespace(i: int) -> str:
    return f"bench-user-{i:03d}"


def _config(ctx: Context) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "clients": int(ctx.size("clients", 8, 32)),
        "ops": int(ctx.size("ops", 10, 100)),
        "questions": int(ctx.size("questions", 16, 64)),
        "namespaces": int(ctx.size("namespaces", 4, 8)),
        "prefill": int(ctx.size("prefill", 20, 100)),
        "new_tokens": int(ctx.size("new_tokens", 8, 16)),
        "max_batch": int(ctx.size("max_batch", 16, 16)),
        "batch_wait_ms": float(ctx.size("batch_wait_ms", 5.0, 5.0)),
        "mode": str(ctx.size("mode", "rag", "rag")),
        "k": K,
        "mix": {op: CYCLE.count(op) for op in OPS},
        "seed": ctx.options.seed,
    }
    small = ("clients", "ops", "questions", "namespaces", "new_tokens", "max_batch")
    if any(cfg[k] < 1 for k in small) or cfg["prefill"] < GET_IDS:
        raise InvalidInputError(
            f"serve: {', '.join(small)} must be >= 1 and prefill >= {GET_IDS}: {cfg}"
        )
    base = ctx.size("base_model", None, None) or ctx.options.base_model
    cfg["base_model"] = str(base) if base else None
    return cfg


def _store(ctx: Context, cfg: dict[str, Any]) -> Path:
    """A new store for the service (created here, then left to the service process)."""
    path = ctx.workdir / NAME
    kwargs: dict[str, Any] = {"base_model": cfg["base_model"]} if cfg["base_model"] else {}
    mem = LoRAMemory.open(path, **kwargs)
    if ctx.options.device != "auto":
        mem.update_config(models={"device": ctx.options.device})
    mem.close()
    return path


def _prefill(
    ctx: Context, url: str, cfg: dict[str, Any], turns: Sequence[Turn]
) -> dict[str, list[str]]:
    n, per = cfg["namespaces"], cfg["prefill"]
    ctx.log(f"serve: pre-filling {n} namespaces with {per} turns each")
    ids: dict[str, list[str]] = {}
    with RemoteMemory(url, timeout=600) as remote:
        for j in range(n):
            part = turns[j * per : (j + 1) * per]
            ids[namespace(j)] = remote.add_turns(namespace(j), [t.as_mapping() for t in part])
        # the model loads on the first question: not inside a timed phase
        remote.ask(namespace(0), "What is my locker code?", mode="rag", max_new_tokens=2)
    return ids


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run(ctx: Context) -> dict[str, Any]:
    cfg = _config(ctx)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    load_start = _loadavg()
    store = _store(ctx, cfg)
    # every stored text distinct (a record's id comes from its text: a repeat adds nothing)
    n_prefill = cfg["namespaces"] * cfg["prefill"]
    turns = make_turns(n_prefill + cfg["clients"] * cfg["ops"], cfg["seed"])
    with service(store, ctx.workdir, cfg["max_batch"], cfg["batch_wait_ms"]) as url:
        timings["start"] = time.perf_counter() - t_start
        t0 = time.perf_counter()
        prefilled = _prefill(ctx, url, cfg, turns[:n_prefill])
        timings["prefill"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = load(ctx, url, cfg, prefilled, [t.text for t in turns[n_prefill:]])
        with RemoteMemory(url) as remote:  # every acknowledged write is there
            loaded["records"] = sum(remote.count(namespace(j)) for j in range(cfg["namespaces"]))
        timings["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = batching(ctx, url, cfg)
        timings["batching"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    written = (
        n_prefill + loaded["per_op"]["add_turn"]["calls"] - loaded["per_op"]["add_turn"]["errors"]
    )
    gain = _gain_target()
    res: dict[str, Any] = {
        "config": cfg,
        "load": loaded,
        "batching": batched,
        "errors": loaded["errors"],
        "qps": {
            "one_client": batched["one_client"]["qps"],
            "many_clients": batched["many_clients"]["qps"],
            "speedup": batched["speedup"],
        },
        "targets": {
            "no errors under load": loaded["errors"] == 0,
            "every write stored": loaded["records"] == written,
            f"micro-batching >= {gain}x": batched["speedup"] >= gain,
        },
        "loadavg": {"start": load_start, "end": _loadavg()},
        "timings_s": timings,
    }
    ctx.log(
        f"serve: {loaded['operations']} operations, {loaded['errors']} errors, "
        f"{loaded['ops_per_s']:.1f} ops/s; asks {batched['one_client']['qps']:.2f} q/s alone, "
        f"{batched['many_clients']['qps']:.2f} q/s from {cfg['clients']} clients "
        f"({batched['speedup']:.2f}x)"
    )
    return res


def _ms(lat: dict[str, float] | None, p: str) -> str:
    return "-" if lat is None else f"{lat[p]:.1f}"


def markdown(res: dict[str, Any]) -> str:
    cfg, ld, b = res["config"], res["load"], res["batching"]
    rows = [
        [op, r["calls"], r["errors"], _ms(r["latency_ms"], "p50"), _ms(r["latency_ms"], "p95")]
        for op, r in ld["per_op"].items()
    ]
    rows.append(["all", ld["operations"], ld["errors"], f"{ld['ops_per_s']:.1f} ops/s", "-"])
    table = md_table(["operation", "calls", "errors", "p50 ms", "p95 ms"], rows)
    one, many = b["one_client"], b["many_clients"]
    qrows = [
        [
            f"{r['clients']} client{'s' if r['clients'] > 1 else ''}",
            b["questions"],
            f"{r['seconds']:.2f}",
            f"{r['qps']:.2f}",
            "-" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}",
        ]
        for r in (one, many)
    ]
    qtable = md_table(["asked by", "questions", "seconds", "questions/s", "mean batch"], qrows)
    ask = ld["ask_batching"]
    notes = [
        f"- {cfg['clients']} clients x {cfg['ops']} operations, mix "
        + ", ".join(f"{op} {w}" for op, w in cfg["mix"].items())
        + f" (of {len(CYCLE)}); {cfg['namespaces']} namespaces pre-filled with "
        f"{cfg['prefill']} turns each; ask: mode {cfg['mode']}, k={cfg['k']}, "
        f"max_new_tokens={cfg['new_tokens']}; service --max-batch {cfg['max_batch']} "
        f"--batch-wait-ms {cfg['batch_wait_ms']:g}; "
        f"base model {cfg['base_model'] or 'the store default'}.",
        f"- Errors under load: {ld['errors']} (target 0: "
        f"{'met' if ld['errors'] == 0 else '**not met**'}); records after it: {ld['records']} "
        f"({'every' if res['targets']['every write stored'] else '**not every**'} "
        "acknowledged write stored).",
        f"- Under load, asks were answered in {ask['batches']} batches "
        f"(mean {ask['mean_batch'] or 0:.1f} questions).",
        f"- Micro-batching: {many['qps'] / one['qps']:.2f}x the questions/s of one client "
        f"(target {_gain_target()}x on this device: "
        f"{'met' if many['qps'] / one['qps'] >= _gain_target() else '**not met**'}); "
        f"{b['same_answers']:.0%} of answers identical to the one-client run.",
    ]
    if res["errors"]:
        notes += [f"  - {e['op']}: {e['error']}" for e in ld["error_samples"]]
    return table + "\n\n" + qtable + "\n\n" + "\n".join(notes)


def plot(res: dict[str, Any], ax: Any) -> None:
    """Latency per operation (p50, p95; log scale) beside questions/s of 1 vs C clients."""
    fig = ax.figure
    fig.set_size_inches(10, 4)
    grid = fig.add_gridspec(1, 2, width_ratios=(3, 2))
    ax.set_subplotspec(grid[0])
    ops = [op for op, r in res["load"]["per_op"].items() if r["latency_ms"]]
    xs = range(len(ops))
    for shift, p in ((-0.2, "p50"), (0.2, "p95")):
        values = [res["load"]["per_op"][op]["latency_ms"][p] for op in ops]
        ax.bar([x + shift for x in xs], values, width=0.4, label=p)
    ax.set_xticks(list(xs), ops)
    ax.set_yscale("log")
    ax.set_ylabel("latency at the client, ms")
    ax.set_title(f"{res['config']['clients']} concurrent clients, mixed operations")
    ax.legend()
    right = fig.add_subplot(grid[1])
    b = res["batching"]
    labels = ["1 client", f"{b['many_clients']['clients']} clients"]
    right.bar(labels, [b["one_client"]["qps"], b["many_clients"]["qps"]], color=("C7", "C2"))
    right.set_ylabel("questions/s")
    right.set_title(f"micro-batching: {b['speedup']:.2f}x")
