"""Write-path benchmark: lora-memory's add_turn / add_turns / search next to raw Chroma.

Full run (sizes 1k, 10k and 100k records; run it on a quiet machine):

    .venv/bin/python benchmarks/write_path.py

Quick check (sizes 1k and 10k, fewer calls and queries):

    .venv/bin/python benchmarks/write_path.py --quick

Options: --sizes 1000,10000,100000  --queries 200  --out docs/benchmarks  --seed 1337
         --single-calls 300  --batched-turns 2048  --pool 2048

Ours and raw Chroma run side by side in the same process and are interleaved call by call
(A B B A ...), so drift on a noisy machine hits both equally and the ratios stay meaningful.
Both use the same MiniLM embedder instance. "Raw" is what a user writing to Chroma by hand
would do: ``embed(texts)`` then ``collection.add(ids, documents, metadatas, embeddings)`` into
a cosine collection, and ``embed([query])`` then ``collection.query(n_results=5)``.

MiniLM manages only a few dozen texts/s on 2 CPU cores, so embedding 100k texts would take
most of an hour. The search stores are therefore filled with the same precomputed vectors:
the first ``--pool`` records get their real MiniLM embeddings and later records noisy copies
of those (see :func:`fill_vectors`). Raw goes through ``collection.add``, ours through
``mem.buffer.add`` (the path ``add_turns`` uses) with its embedder swapped for a lookup of
those vectors. The fill is timed and reported too, as throughput excluding embedding.

Writes ``<out>/write_path.json`` (config, environment, every raw number) and
``<out>/write_path.md`` (the summary table, also printed to stdout). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _env import base_environment  # benchmarks/ is on sys.path when a script runs
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
NS_WRITE = "bench-write"
NS_SEARCH = "bench-search"
RAW_WRITE = "raw-write"
RAW_SEARCH = "raw-search"
K = 5
FILL_BATCH = 4096  # Buffer's own max Chroma batch
EMBED_CHUNK = 1024
NOISE_NORM = 0.5  # perturbed copies keep cosine ~0.89 with their source vector
MIN_WORDS, MAX_WORDS = 10, 25
TARGET_BATCHED_TPS = 200.0
TARGET_SEARCH_RATIO = 1.15
PACKAGES = ("lora-memory-plugin", "torch", "chromadb", "transformers", "tokenizers", "numpy")


# ---- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    sizes: tuple[int, ...]
    queries: int
    single: int
    batched: int


FULL = Preset(sizes=(1_000, 10_000, 100_000), queries=200, single=300, batched=2048)
QUICK = Preset(sizes=(1_000, 10_000), queries=50, single=60, batched=512)


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    queries: int
    single_calls: int
    batched_turns: int
    batch_size: int
    fill_batch: int
    pool: int
    warmup: int
    k: int
    seed: int
    quick: bool
    out: str


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description="Write-path benchmark: ours vs raw Chroma.")
    p.add_argument("--sizes", help="store sizes for search, comma-separated (default 1k,10k,100k)")
    p.add_argument("--queries", type=int, help="timed search queries per size (default 200)")
    p.add_argument("--single-calls", type=int, help="timed add_turn calls per side (default 300)")
    p.add_argument("--batched-turns", type=int, help="turns written in batches of 256 per side")
    p.add_argument(
        "--pool", type=int, default=2048, help="fill records with real embeddings (default 2048)"
    )
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default="docs/benchmarks", help="output folder")
    p.add_argument("--quick", action="store_true", help="sizes 1k,10k and fewer calls/queries")
    a = p.parse_args(argv)
    base = QUICK if a.quick else FULL
    sizes = tuple(int(s) for s in a.sizes.split(",")) if a.sizes else base.sizes
    if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
        p.error("--sizes must be distinct positive integers in increasing order")
    cfg = Config(
        sizes=sizes,
        queries=base.queries if a.queries is None else a.queries,
        single_calls=base.single if a.single_calls is None else a.single_calls,
        batched_turns=base.batched if a.batched_turns is None else a.batched_turns,
        batch_size=256,
        fill_batch=FILL_BATCH,
        pool=min(a.pool, sizes[-1]),
        warmup=10,
        k=K,
        seed=a.seed,
        quick=a.quick,
        out=a.out,
    )
    if min(cfg.queries, cfg.single_calls, cfg.batched_turns, cfg.pool) < 2:
        p.error("--queries, --single-calls, --batched-turns and --pool must be >= 2")
    return cfg


# ---- realistic, distinct chat turns --------------------------------------------------------
NAMES = (
    "Priya", "Tom", "Amara", "Luis", "Mei", "Jonas", "Fatima", "Oliver", "Sofia", "Kenji",
    "Hannah", "Diego", "Ines", "Marcus", "Leila", "Pavel", "Grace", "Omar", "Chloe", "Ravi",
    "Nadia", "Ethan", "Yuki", "Samir", "Elena", "Kwame", "Zoe", "Felix", "Aisha", "Bruno",
)  # fmt: skip
RELATIONS = (
    "sister", "brother", "mother", "father", "daughter", "son", "boss", "neighbour",
    "cousin", "grandmother", "roommate", "best friend", "aunt", "uncle", "partner", "dentist",
)  # fmt: skip
EVENTS = (
    "dentist appointment", "piano lesson", "job interview", "birthday dinner", "flight",
    "parent-teacher meeting", "yoga class", "vet appointment", "football match", "book club",
    "physio session", "team offsite", "wedding rehearsal", "car service", "haircut",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PLACES = (
    "the old market", "the library on Elm Street", "Central Station", "the hospital annex",
    "the community centre", "the airport", "the office", "the gym downtown", "the harbour",
    "the school gym", "the town hall", "the café near the park", "the north parking lot",
)  # fmt: skip
CITIES = (
    "Lyon", "Osaka", "Lisbon", "Toronto", "Nairobi", "Krakow", "Austin", "Porto", "Seoul",
    "Dublin", "Melbourne", "Bogotá", "Tallinn", "Edinburgh", "Valencia", "Hanoi",
)  # fmt: skip
FOODS = (
    "peanuts", "shellfish", "gluten", "lactose", "sesame", "eggs", "soy", "kiwi", "mustard",
    "strawberries", "celery", "almonds",
)  # fmt: skip
ITEMS = (
    "locker", "bike lock", "garage door", "office safe", "storage unit", "gym bag lock",
    "suitcase", "filing cabinet",
)  # fmt: skip
HOBBIES = (
    "pottery", "rock climbing", "sourdough baking", "chess", "salsa dancing", "birdwatching",
    "woodworking", "trail running", "watercolour painting", "learning Portuguese",
)  # fmt: skip
TURN_TEMPLATES = (
    "My {rel}'s {event} is on {day} at {time}, at {place}.",
    "Remind me that {name} has a {event} on {day} at {time} near {place}.",
    "I moved to {city} in {year} and my new flat is on the {n}th floor.",
    "My {item} code is {code}, please do not share it with {name}.",
    "{name} is allergic to {food}, so skip it when we cook on {day}.",
    "I started {hobby} with my {rel} last {day} and we go every week at {time}.",
    "Our {rel} {name} is visiting from {city} for {n} days starting {day}.",
    "The {event} got moved from {day} to the {n}th, still at {time} at {place}.",
    "I owe {name} {amount} euros for the tickets to the {event} in {city}.",
    "My {rel} prefers to be called {name} and lives in {city} since {year}.",
    "Can you note that the {item} at {place} now opens with code {code}?",
    "{name} told me the {event} budget is {amount} dollars, split between {n} people.",
    "I parked the car at {place} on level {n}, spot {code}, before the {event}.",
    "Every {day} at {time} I call my {rel} {name}, who lives in {city}.",
    "We booked a table for {n} at {place} on {day} at {time} for {name}'s birthday.",
    "I cannot eat {food} and my {rel} {name} cannot eat {food2}, so plan the menu around that.",
)  # fmt: skip
QUERY_TEMPLATES = (
    "When is my {rel}'s {event}?",
    "What is my {item} code?",
    "Which city did I move to?",
    "What is {name} allergic to?",
    "How much do I owe {name}?",
    "Where did I park the car?",
    "Who is visiting from {city}?",
    "What hobby did I start with my {rel}?",
    "When do I call my {rel}?",
    "Where is the {event} this week?",
    "What can my {rel} not eat?",
    "Where did we book a table for {name}'s birthday?",
)  # fmt: skip
ROLES_CYCLE = ("user", "user", "user", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    text: str
    role: str
    session_id: str

    def as_mapping(self) -> dict[str, Any]:
        return {"content": self.text, "role": self.role, "session_id": self.session_id}

    def raw_metadata(self, created_at: float) -> dict[str, Any]:
        return {"role": self.role, "session_id": self.session_id, "created_at": created_at}


def _slots(rng: random.Random) -> dict[str, str]:
    hour, minute = rng.randint(1, 12), rng.choice((0, 15, 30, 45))
    return {
        "name": rng.choice(NAMES),
        "rel": rng.choice(RELATIONS),
        "event": rng.choice(EVENTS),
        "day": rng.choice(DAYS),
        "time": f"{hour}:{minute:02d}{rng.choice(('am', 'pm'))}",
        "place": rng.choice(PLACES),
        "city": rng.choice(CITIES),
        "food": rng.choice(FOODS),
        "food2": rng.choice(FOODS),
        "item": rng.choice(ITEMS),
        "hobby": rng.choice(HOBBIES),
        "year": str(rng.randint(1995, 2025)),
        "n": str(rng.randint(2, 30)),
        "code": str(rng.randint(1000, 9999)),
        "amount": str(rng.randint(5, 900)),
    }


def make_turns(n: int, seed: int) -> list[Turn]:
    """``n`` distinct, deterministic chat turns of MIN_WORDS..MAX_WORDS words."""
    rng = random.Random(seed)
    seen: set[str] = set()
    turns: list[Turn] = []
    for _ in range(50 * n + 1000):
        if len(turns) == n:
            return turns
        text = rng.choice(TURN_TEMPLATES).format(**_slots(rng))
        if text in seen or not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            continue
        seen.add(text)
        i = len(turns)
        turns.append(Turn(text, ROLES_CYCLE[i % len(ROLES_CYCLE)], f"session-{i // 20:05d}"))
    raise RuntimeError(f"could only generate {len(turns)} distinct turns out of {n}")


def make_queries(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(QUERY_TEMPLATES).format(**_slots(rng)) for _ in range(n)]


# ---- timing helpers ------------------------------------------------------------------------
def interleaved(
    n: int, ours: Callable[[int], object], raw: Callable[[int], object], desc: str
) -> tuple[list[float], list[float]]:
    """Run ``ours(i)`` and ``raw(i)`` for i < n in A B B A order; seconds per call for each."""
    t_ours: list[float] = []
    t_raw: list[float] = []
    for i in tqdm(range(n), desc=desc, file=sys.stderr, unit="it"):
        order = ((ours, t_ours), (raw, t_raw))
        for fn, acc in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn(i)
            acc.append(time.perf_counter() - t0)
    return t_ours, t_raw


def latency_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


def throughput(items: int, samples_s: Sequence[float]) -> dict[str, Any]:
    total = float(sum(samples_s))
    return {
        "items": items,
        "total_s": total,
        "per_s": items / total,
        "call_latency_ms": latency_ms(samples_s),
        "samples_s": list(samples_s),
    }


def side_by_side(items: int, t_ours: Sequence[float], t_raw: Sequence[float]) -> dict[str, Any]:
    ours, raw = throughput(items, t_ours), throughput(items, t_raw)
    return {"ours": ours, "raw": raw, "time_ratio": ours["total_s"] / raw["total_s"]}


# ---- the two stores --------------------------------------------------------------------------
@dataclass
class Stores:
    mem: Any  # LoRAMemory
    raw_client: Any  # chromadb.PersistentClient
    raw_write: Any  # chromadb Collection
    raw_search: Any

    @property
    def embedder(self) -> Any:
        return self.mem.embedder


def open_stores(root: Path) -> Stores:
    import chromadb
    from chromadb.config import Settings

    from lora_memory_plugin import LoRAMemory

    mem = LoRAMemory.open(root / "ours")
    client = chromadb.PersistentClient(
        path=str(root / "raw"), settings=Settings(anonymized_telemetry=False)
    )

    def collection(name: str) -> Any:
        # Same HNSW configuration as lora-memory's buffer; embeddings are always passed in.
        return client.create_collection(
            name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )

    # Create the search namespace now (with the real embedder attached), outside the timed fill.
    mem.buffer._collection(NS_SEARCH, create=True)
    return Stores(mem, client, collection(RAW_WRITE), collection(RAW_SEARCH))


def raw_add(col: Any, ids: Sequence[str], turns: Sequence[Turn], vectors: np.ndarray) -> None:
    now = time.time()
    col.add(
        ids=list(ids),
        documents=[t.text for t in turns],
        metadatas=[t.raw_metadata(now) for t in turns],
        embeddings=vectors,
    )


def warm_up(st: Stores, turns: Sequence[Turn]) -> None:
    """Load the model and create both write collections outside any timed region."""
    half = len(turns) // 2
    batch, singles = turns[:half], turns[half:]
    st.mem.add_turns(NS_WRITE, [t.as_mapping() for t in batch])
    ids = [f"warm-{i}" for i in range(len(batch))]
    raw_add(st.raw_write, ids, batch, st.embedder.embed([t.text for t in batch]))
    for i, t in enumerate(singles):
        st.mem.add_turn(NS_WRITE, t.text, role=t.role, session_id=t.session_id)
        raw_add(st.raw_write, [f"warm-single-{i}"], [t], st.embedder.embed([t.text]))


# ---- 1 + 2: write throughput -----------------------------------------------------------------
def bench_single(st: Stores, turns: Sequence[Turn]) -> dict[str, Any]:
    def ours(i: int) -> None:
        t = turns[i]
        st.mem.add_turn(NS_WRITE, t.text, role=t.role, session_id=t.session_id)

    def raw(i: int) -> None:
        t = turns[i]
        raw_add(st.raw_write, [f"single-{i:07d}"], [t], st.embedder.embed([t.text]))

    t_ours, t_raw = interleaved(len(turns), ours, raw, "write: single add_turn")
    return {"calls": len(turns), **side_by_side(len(turns), t_ours, t_raw)}


def bench_batched(st: Stores, turns: Sequence[Turn], batch: int) -> dict[str, Any]:
    batches = [turns[s : s + batch] for s in range(0, len(turns), batch)]
    mappings = [[t.as_mapping() for t in b] for b in batches]

    def ours(i: int) -> None:
        st.mem.add_turns(NS_WRITE, mappings[i], batch_size=batch)

    def raw(i: int) -> None:
        b = batches[i]
        ids = [f"batch-{i:05d}-{j:04d}" for j in range(len(b))]
        raw_add(st.raw_write, ids, b, st.embedder.embed([t.text for t in b]))

    t_ours, t_raw = interleaved(len(batches), ours, raw, f"write: batches of {batch}")
    return {"batch_size": batch, "batches": len(batches), **side_by_side(len(turns), t_ours, t_raw)}


# ---- 3: search latency at growing store sizes ------------------------------------------------
class LookupEmbedder:
    """Stands in for the buffer's embedder during the fill: returns precomputed vectors."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self._row = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors[[self._row[t] for t in texts]]


@contextmanager
def precomputed_embeddings(buffer: Any, lookup: LookupEmbedder) -> Iterator[None]:
    real = buffer.embedder
    buffer.embedder = lookup
    try:
        yield
    finally:
        buffer.embedder = real


def embed_pool(embedder: Any, texts: Sequence[str]) -> tuple[np.ndarray, float]:
    """Real batched embeddings for ``texts`` and the seconds they took."""
    out = np.empty((len(texts), 384), dtype=np.float32)
    t0 = time.perf_counter()
    with tqdm(total=len(texts), desc="fill: embed pool", file=sys.stderr, unit="text") as bar:
        for s in range(0, len(texts), EMBED_CHUNK):
            out[s : s + EMBED_CHUNK] = embedder.embed(texts[s : s + EMBED_CHUNK])
            bar.update(min(EMBED_CHUNK, len(texts) - s))
    return out, time.perf_counter() - t0


def fill_vectors(pool: np.ndarray, start: int, stop: int, seed: int) -> np.ndarray:
    """Unit vectors for fill records start..stop-1, identical for both stores.

    Record i < len(pool) gets its own real embedding; later records get a noisy copy of
    ``pool[i % len(pool)]`` (noise of norm NOISE_NORM, then renormalised), so 100k records cost
    a few thousand embeddings and still sit where real MiniLM embeddings of chat turns sit.
    """
    idx = np.arange(start, stop)
    vectors: np.ndarray = pool[idx % len(pool)].copy()
    rng = np.random.default_rng([seed, start])
    noise = rng.standard_normal(vectors.shape, dtype=np.float32)
    noise *= NOISE_NORM / np.linalg.norm(noise, axis=1, keepdims=True)
    noise[idx < len(pool)] = 0.0
    vectors += noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def fill(
    st: Stores, turns: Sequence[Turn], vectors: np.ndarray, offset: int, batch: int
) -> dict[str, Any]:
    """Add ``turns`` (fill positions offset..) with ``vectors`` to both search stores."""
    from lora_memory_plugin.store.records import NewRecord

    starts = list(range(0, len(turns), batch))

    def ours(i: int) -> None:
        part = turns[starts[i] : starts[i] + batch]
        records = [NewRecord(t.text, "turn", role=t.role, session_id=t.session_id) for t in part]
        st.mem.buffer.add(NS_SEARCH, records)

    def raw(i: int) -> None:
        s = starts[i]
        part = turns[s : s + batch]
        ids = [f"fill-{offset + s + j:07d}" for j in range(len(part))]
        raw_add(st.raw_search, ids, part, vectors[s : s + batch])

    lookup = LookupEmbedder([t.text for t in turns], vectors)
    with precomputed_embeddings(st.mem.buffer, lookup):
        t_ours, t_raw = interleaved(len(starts), ours, raw, f"fill: batches of {batch}")
    return {"added": len(turns), **side_by_side(len(turns), t_ours, t_raw)}


def check_sizes(st: Stores, size: int) -> None:
    ours, raw = st.mem.count(NS_SEARCH), st.raw_search.count()
    if ours != size or raw != size:
        raise RuntimeError(f"store sizes after fill: ours {ours}, raw {raw}, expected {size}")


def top_k_agreement(st: Stores, queries: Sequence[str], k: int) -> float:
    """Mean overlap of ours' and raw's top-k documents (a sanity check: same data, same index)."""
    overlaps = []
    for q in queries:
        ours = {h.text for h in st.mem.search(NS_SEARCH, q, k=k)}
        raw = st.raw_search.query(query_embeddings=st.embedder.embed([q]), n_results=k)
        overlaps.append(len(ours & set(raw["documents"][0])) / k)
    return float(np.mean(overlaps))


def bench_search(
    st: Stores, queries: Sequence[str], warmup: Sequence[str], k: int, size: int
) -> dict[str, Any]:
    def ours_on(qs: Sequence[str]) -> Callable[[int], object]:
        return lambda i: st.mem.search(NS_SEARCH, qs[i], k=k)

    def raw_on(qs: Sequence[str]) -> Callable[[int], object]:
        return lambda i: st.raw_search.query(
            query_embeddings=st.embedder.embed([qs[i]]), n_results=k
        )

    interleaved(len(warmup), ours_on(warmup), raw_on(warmup), f"search@{size}: warm-up")
    t_ours, t_raw = interleaved(len(queries), ours_on(queries), raw_on(queries), f"search@{size}")
    ours, raw = latency_ms(t_ours), latency_ms(t_raw)
    return {
        "size": size,
        "queries": len(queries),
        "ours_ms": ours,
        "raw_ms": raw,
        "ratio_p50": ours["p50"] / raw["p50"],
        "ratio_p95": ours["p95"] / raw["p95"],
        "top_k_agreement": top_k_agreement(st, queries[:20], k),
        "ours_samples_s": t_ours,
        "raw_samples_s": t_raw,
    }


# ---- environment + report --------------------------------------------------------------------
def environment() -> dict[str, Any]:
    import torch

    return {
        **base_environment(PACKAGES),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()),
    }


def machine_line(env: dict[str, Any]) -> str:
    pk = env["packages"]
    return (
        f"{env['cpu_model']}, {env['cpu_count']} CPUs, {env['uname']}; Python {env['python']}, "
        f"torch {pk['torch']}, chromadb {pk['chromadb']}, transformers {pk['transformers']}; "
        f"{env['date']}; load avg {env['loadavg_start'][0]:.1f} at start, "
        f"{env['loadavg_end'][0]:.1f} at end"
    )


@dataclass(frozen=True)
class Row:
    metric: str
    ours: str
    raw: str
    ratio: str
    target: str
    met: str


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table_rows(res: dict[str, Any]) -> list[Row]:
    single, batched = res["write"]["single"], res["write"]["batched"]
    b_tps = batched["ours"]["per_s"]
    rows = [
        Row(
            f"add_turn, one turn per call ({single['calls']} calls), turns/s",
            f"{single['ours']['per_s']:.1f}",
            f"{single['raw']['per_s']:.1f}",
            f"{single['time_ratio']:.2f}x",
            "-",
            "-",
        ),
        Row(
            f"add_turns, batches of {batched['batch_size']} ({batched['ours']['items']} turns), "
            "turns/s",
            f"{b_tps:.1f}",
            f"{batched['raw']['per_s']:.1f}",
            f"{batched['time_ratio']:.2f}x",
            f">= {TARGET_BATCHED_TPS:.0f} turns/s",
            _met(b_tps >= TARGET_BATCHED_TPS),
        ),
    ]
    for f in res["fill"]:
        rows.append(
            Row(
                f"fill to {f['size']:,} (+{f['added']:,}, precomputed embeddings), records/s",
                f"{f['ours']['per_s']:.0f}",
                f"{f['raw']['per_s']:.0f}",
                f"{f['time_ratio']:.2f}x",
                "-",
                "-",
            )
        )
    for s in res["search"]:
        for p in ("p50", "p95"):
            ratio = s[f"ratio_{p}"]
            rows.append(
                Row(
                    f"search k={res['config']['k']} @ {s['size']:,} records, {p} ms",
                    f"{s['ours_ms'][p]:.2f}",
                    f"{s['raw_ms'][p]:.2f}",
                    f"{ratio:.3f}x",
                    f"<= {TARGET_SEARCH_RATIO}x",
                    _met(ratio <= TARGET_SEARCH_RATIO),
                )
            )
    return rows


def markdown(res: dict[str, Any]) -> str:
    cfg = res["config"]
    head = ("Metric", "ours", "raw chroma", "ratio (ours/raw time)", "target", "met?")
    lines = [
        "# Write-path benchmark",
        "",
        f"Machine: {machine_line(res['environment'])}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(("---", "---:", "---:", "---:", "---", "---")) + "|",
    ]
    lines += [f"| {' | '.join(asdict(r).values())} |" for r in table_rows(res)]
    agree = ", ".join(f"{s['top_k_agreement']:.2f}" for s in res["search"])
    lines += [
        "",
        f"- Run: `{res['command']}` ({res['timings_s']['total']:.0f} s wall). "
        f"Seed {cfg['seed']}; {cfg['queries']} timed queries per size after "
        f"{cfg['warmup']} warm-up queries; ours and raw interleaved ABBA.",
        f"- MiniLM alone, batched ({res['embed_pool']['texts']} texts): "
        f"{res['embed_pool']['per_s']:.1f} texts/s, the ceiling for any write path here.",
        f"- Fill: the first {cfg['pool']} records carry their real embeddings, later ones noisy "
        "copies of those (same vectors in both stores); fill rates exclude embedding.",
        f"- Top-{cfg['k']} agreement ours vs raw (same vectors; sanity check): {agree}.",
        "- Ratio < 1 means ours was faster. Every raw number is in `write_path.json`.",
        "",
    ]
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------
def run(cfg: Config, root: Path) -> dict[str, Any]:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    n_search, n_warm = cfg.sizes[-1], 2 * cfg.warmup
    turns = make_turns(n_search + cfg.single_calls + cfg.batched_turns + n_warm, cfg.seed)
    search_turns = turns[:n_search]
    single = turns[n_search : n_search + cfg.single_calls]
    batched = turns[n_search + cfg.single_calls : n_search + cfg.single_calls + cfg.batched_turns]
    queries = make_queries(cfg.queries + cfg.warmup, cfg.seed + 1)

    st = open_stores(root)
    warm_up(st, turns[-n_warm:])
    timings["setup"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    write = {
        "single": bench_single(st, single),
        "batched": bench_batched(st, batched, cfg.batch_size),
    }
    timings["write"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pool, pool_s = embed_pool(st.embedder, [t.text for t in search_turns[: cfg.pool]])
    timings["embed_pool"] = time.perf_counter() - t0
    embed = {"texts": cfg.pool, "total_s": pool_s, "per_s": cfg.pool / pool_s}

    fills, searches, filled = [], [], 0
    for size in cfg.sizes:
        t0 = time.perf_counter()
        vectors = fill_vectors(pool, filled, size, cfg.seed)
        f = fill(st, search_turns[filled:size], vectors, filled, cfg.fill_batch)
        check_sizes(st, size)
        fills.append({"size": size, **f})
        timings[f"fill@{size}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        searches.append(bench_search(st, queries[cfg.warmup :], queries[: cfg.warmup], cfg.k, size))
        timings[f"search@{size}"] = time.perf_counter() - t0
        filled = size
    timings["total"] = time.perf_counter() - t_start
    words = [len(t.text.split()) for t in turns]
    return {
        "write": write,
        "embed_pool": embed,
        "fill": fills,
        "search": searches,
        "timings_s": timings,
        "turn_words": {"min": min(words), "mean": float(np.mean(words)), "max": max(words)},
        "examples": {"turns": [t.text for t in turns[:5]], "queries": queries[:5]},
    }


def main(argv: Sequence[str] | None = None) -> None:
    cfg = parse_args(argv)
    env = environment()
    with tempfile.TemporaryDirectory(prefix="lm-bench-") as tmp:
        results = run(cfg, Path(tmp))
    env["loadavg_end"] = list(os.getloadavg())
    args = " ".join(sys.argv[1:] if argv is None else argv)
    res = {
        "benchmark": "write_path",
        "command": f".venv/bin/python benchmarks/write_path.py {args}".strip(),
        "config": asdict(cfg),
        "environment": env,
        **results,
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "write_path.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    md = markdown(res)
    (out / "write_path.md").write_text(md, encoding="utf-8")
    print(md)
    print(f"wrote {out / 'write_path.json'} and {out / 'write_path.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
