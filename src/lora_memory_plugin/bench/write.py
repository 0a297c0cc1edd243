"""``write``: add_turn, add_turns and search through lora-memory next to raw Chroma doing the same
work, search at growing store sizes (full: 1k, 10k and 100k records).

Both sides run in one process on the same MiniLM embedder instance, interleaved call by call
(A B B A ...), so drift on a noisy machine hits both equally and the ratios hold. "Raw" is what a
user writing to Chroma by hand would do: ``embed(texts)`` then ``collection.add(ids, documents,
metadatas, embeddings)`` into a cosine collection, and ``embed([query])`` then
``collection.query(n_results=5)``.

MiniLM manages only a few dozen texts/s on 2 CPU cores, so embedding 100k texts would take most
of an hour. The search stores are therefore filled with precomputed vectors: the first ``pool``
records get their real MiniLM embeddings and later records noisy copies of those
(:func:`fill_vectors`). Raw goes through ``collection.add``, ours through ``mem.buffer.add``
(the path ``add_turns`` uses) with its embedder swapped for a lookup of those vectors; the fill
is timed too, as throughput excluding embedding.

Sizes (``--set NAME=VALUE``; quick / full): ``sizes`` 1000 / 1000,10000,100000, ``queries``
(timed per size) 40 / 200, ``single_calls`` 40 / 300, ``batched_turns`` 512 / 2048, ``pool``
256 / 2048. ``make bench-write`` runs the full sizes with seed 1337 into ``docs/benchmarks``.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..store.records import NewRecord
from ._common import Context, md_table, pct

NAME = "write"
NS = "write"  # add_turn / add_turns
NS_SEARCH = "write-search"  # the store filled to each size
K = 5
BATCH = 256  # add_turns' batch size
FILL_BATCH = 4096  # the buffer's own largest Chroma batch
EMBED_CHUNK = 1024
WARMUP = 10  # untimed queries per size
NOISE_NORM = 0.5  # perturbed copies keep cosine ~0.89 with their source vector
MIN_WORDS, MAX_WORDS = 10, 25
TARGET_BATCHED_TPS = 200.0
TARGET_SEARCH_RATIO = 1.15


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


# ---- timing --------------------------------------------------------------------------------
def interleaved(
    ctx: Context, n: int, ours: Callable[[int], object], raw: Callable[[int], object], what: str
) -> tuple[list[float], list[float]]:
    """Run ``ours(i)`` and ``raw(i)`` for i < n in A B B A order; seconds per call for each."""
    ctx.log(f"write: {what} ({n} a side)")
    t_ours: list[float] = []
    t_raw: list[float] = []
    for i in range(n):
        order = ((ours, t_ours), (raw, t_raw))
        for fn, acc in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn(i)
            acc.append(time.perf_counter() - t0)
    return t_ours, t_raw


def latency_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [1000 * s for s in samples_s]
    return {
        "p50": pct(ms, 0.5),
        "p95": pct(ms, 0.95),
        "mean": statistics.fmean(ms),
        "min": min(ms),
        "max": max(ms),
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


# ---- the raw-Chroma side -------------------------------------------------------------------
class RawChroma:
    """Two cosine collections (writes, search) written the way a user of chromadb would."""

    def __init__(self, ctx: Context, embedder: Any) -> None:
        import chromadb  # noqa: PLC0415 (heavy; loaded when the suite runs)
        from chromadb.config import Settings  # noqa: PLC0415 (as chromadb)

        self.embedder = embedder
        self.client = chromadb.PersistentClient(
            path=str(ctx.workdir / "raw-chroma"), settings=Settings(anonymized_telemetry=False)
        )
        # the buffer's HNSW configuration; embeddings are always passed in
        self.write, self.search = (
            self.client.create_collection(
                name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
            )
            for name in ("raw-write", "raw-search")
        )

    @staticmethod
    def add(col: Any, ids: Sequence[str], turns: Sequence[Turn], vectors: np.ndarray) -> None:
        now = time.time()
        col.add(
            ids=list(ids),
            documents=[t.text for t in turns],
            metadatas=[t.raw_metadata(now) for t in turns],
            embeddings=vectors,
        )

    def write_turns(self, ids: Sequence[str], turns: Sequence[Turn]) -> None:
        self.add(self.write, ids, turns, self.embedder.embed([t.text for t in turns]))

    def query(self, q: str, k: int) -> Any:
        return self.search.query(query_embeddings=self.embedder.embed([q]), n_results=k)


# ---- 1 + 2: write throughput ---------------------------------------------------------------
def bench_single(ctx: Context, mem: Any, raw: RawChroma, turns: Sequence[Turn]) -> dict[str, Any]:
    def ours(i: int) -> None:
        t = turns[i]
        mem.add_turn(NS, t.text, role=t.role, session_id=t.session_id)

    def theirs(i: int) -> None:
        raw.write_turns([f"single-{i:07d}"], [turns[i]])

    t_ours, t_raw = interleaved(ctx, len(turns), ours, theirs, "add_turn, one turn a call")
    return {"calls": len(turns), **side_by_side(len(turns), t_ours, t_raw)}


def bench_batched(ctx: Context, mem: Any, raw: RawChroma, turns: Sequence[Turn]) -> dict[str, Any]:
    batches = [turns[s : s + BATCH] for s in range(0, len(turns), BATCH)]
    mappings = [[t.as_mapping() for t in b] for b in batches]

    def ours(i: int) -> None:
        mem.add_turns(NS, mappings[i], batch_size=BATCH)

    def theirs(i: int) -> None:
        raw.write_turns([f"batch-{i:05d}-{j:04d}" for j in range(len(batches[i]))], batches[i])

    t_ours, t_raw = interleaved(ctx, len(batches), ours, theirs, f"add_turns, batches of {BATCH}")
    return {"batch_size": BATCH, "batches": len(batches), **side_by_side(len(turns), t_ours, t_raw)}


# ---- 3: search latency at growing store sizes ----------------------------------------------
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


def embed_pool(ctx: Context, embedder: Any, texts: Sequence[str]) -> tuple[np.ndarray, float]:
    """Real batched embeddings for ``texts`` and the seconds they took."""
    ctx.log(f"write: embedding the fill pool ({len(texts)} texts)")
    t0 = time.perf_counter()
    chunks = [embedder.embed(texts[s : s + EMBED_CHUNK]) for s in range(0, len(texts), EMBED_CHUNK)]
    return np.concatenate(chunks).astype(np.float32), time.perf_counter() - t0


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
    ctx: Context,
    mem: Any,
    raw: RawChroma,
    turns: Sequence[Turn],
    vectors: np.ndarray,
    *,
    offset: int,
) -> dict[str, Any]:
    """Add ``turns`` (fill positions offset..) with ``vectors`` to both search stores."""
    starts = list(range(0, len(turns), FILL_BATCH))

    def ours(i: int) -> None:
        part = turns[starts[i] : starts[i] + FILL_BATCH]
        records = [NewRecord(t.text, "turn", role=t.role, session_id=t.session_id) for t in part]
        mem.buffer.add(NS_SEARCH, records)

    def theirs(i: int) -> None:
        s = starts[i]
        part = turns[s : s + FILL_BATCH]
        ids = [f"fill-{offset + s + j:07d}" for j in range(len(part))]
        raw.add(raw.search, ids, part, vectors[s : s + FILL_BATCH])

    lookup = LookupEmbedder([t.text for t in turns], vectors)
    with precomputed_embeddings(mem.buffer, lookup):
        what = f"fill to {offset + len(turns)}, batches of {FILL_BATCH}"
        t_ours, t_raw = interleaved(ctx, len(starts), ours, theirs, what)
    return {"added": len(turns), **side_by_side(len(turns), t_ours, t_raw)}


def top_k_agreement(mem: Any, raw: RawChroma, queries: Sequence[str]) -> float:
    """Mean overlap of ours' and raw's top-k documents (a sanity check: same data, same index)."""
    overlaps = []
    for q in queries:
        ours = {h.text for h in mem.search(NS_SEARCH, q, k=K)}
        overlaps.append(len(ours & set(raw.query(q, K)["documents"][0])) / K)
    return statistics.fmean(overlaps)


def bench_search(
    ctx: Context, mem: Any, raw: RawChroma, queries: Sequence[str], size: int
) -> dict[str, Any]:
    warm, timed = queries[:WARMUP], queries[WARMUP:]

    def run_on(qs: Sequence[str], what: str) -> tuple[list[float], list[float]]:
        ours, theirs = (
            (lambda i: mem.search(NS_SEARCH, qs[i], k=K)),
            (lambda i: raw.query(qs[i], K)),
        )
        return interleaved(ctx, len(qs), ours, theirs, what)

    run_on(warm, f"search @ {size} records, warm-up")
    t_ours, t_raw = run_on(timed, f"search @ {size} records")
    ours, theirs = latency_ms(t_ours), latency_ms(t_raw)
    return {
        "size": size,
        "queries": len(timed),
        "ours_ms": ours,
        "raw_ms": theirs,
        "ratio_p50": ours["p50"] / theirs["p50"],
        "ratio_p95": ours["p95"] / theirs["p95"],
        "top_k_agreement": top_k_agreement(mem, raw, timed[:20]),
        "ours_samples_s": t_ours,
        "raw_samples_s": t_raw,
    }


# ---- the suite -----------------------------------------------------------------------------
def _config(ctx: Context) -> dict[str, Any]:
    sizes = tuple(int(s) for s in ctx.size("sizes", (1_000,), (1_000, 10_000, 100_000)))
    if not sizes or sizes[0] < 1 or list(sizes) != sorted(set(sizes)):
        raise InvalidInputError(f"write: sizes must be distinct, positive, increasing: {sizes}")
    cfg: dict[str, Any] = {
        "sizes": list(sizes),
        "queries": int(ctx.size("queries", 40, 200)),
        "single_calls": int(ctx.size("single_calls", 40, 300)),
        "batched_turns": int(ctx.size("batched_turns", 512, 2048)),
        "batch_size": BATCH,
        "fill_batch": FILL_BATCH,
        "pool": min(int(ctx.size("pool", 256, 2048)), sizes[-1]),
        "warmup": WARMUP,
        "k": K,
        "seed": ctx.options.seed,
    }
    if min(cfg["queries"], cfg["single_calls"], cfg["batched_turns"], cfg["pool"]) < 2:
        raise InvalidInputError("write: queries, single_calls, batched_turns and pool must be >= 2")
    return cfg


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run(ctx: Context) -> dict[str, Any]:
    import torch  # noqa: PLC0415 (heavy; loaded when the suite runs)

    t_start = time.perf_counter()
    cfg = _config(ctx)
    machine = {
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": _loadavg(),
    }
    n_search, n_single, n_batched = cfg["sizes"][-1], cfg["single_calls"], cfg["batched_turns"]
    turns = make_turns(n_search + n_single + n_batched + 2 * WARMUP, cfg["seed"])
    search_turns = turns[:n_search]
    single = turns[n_search : n_search + n_single]
    batched = turns[n_search + n_single : n_search + n_single + n_batched]
    queries = make_queries(cfg["queries"] + WARMUP, cfg["seed"] + 1)

    mem = ctx.store(NAME)
    raw = RawChroma(ctx, mem.embedder)
    # outside any timed region: load the embedder, create both write collections and the
    # search namespace (with the real embedder attached), run one batch through the embedder
    warm = turns[-2 * WARMUP :]
    mem.add_turn(NS, warm[0].text, role=warm[0].role, session_id=warm[0].session_id)
    raw.write_turns(["warm-0"], warm[:1])
    mem.embedder.embed([t.text for t in warm[1:]])
    mem.buffer._collection(NS_SEARCH, create=True)
    timings = {"setup": time.perf_counter() - t_start}

    t0 = time.perf_counter()
    write = {
        "single": bench_single(ctx, mem, raw, single),
        "batched": bench_batched(ctx, mem, raw, batched),
    }
    timings["write"] = time.perf_counter() - t0

    pool, pool_s = embed_pool(ctx, mem.embedder, [t.text for t in search_turns[: cfg["pool"]]])
    timings["embed_pool"] = pool_s
    fills, searches, filled = [], [], 0
    for size in cfg["sizes"]:
        t0 = time.perf_counter()
        vectors = fill_vectors(pool, filled, size, cfg["seed"])
        f = fill(ctx, mem, raw, search_turns[filled:size], vectors, offset=filled)
        ours, theirs = mem.count(NS_SEARCH), raw.search.count()
        if ours != size or theirs != size:
            raise RuntimeError(f"store sizes after fill: ours {ours}, raw {theirs}, not {size}")
        fills.append({"size": size, **f})
        timings[f"fill@{size}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        searches.append(bench_search(ctx, mem, raw, queries, size))
        timings[f"search@{size}"] = time.perf_counter() - t0
        filled = size
    timings["total"] = time.perf_counter() - t_start
    machine["loadavg_end"] = _loadavg()
    words = [len(t.text.split()) for t in turns]
    res: dict[str, Any] = {
        "config": cfg,
        "records": mem.count(NS),
        "machine": machine,
        "write": write,
        "embed_pool": {"texts": len(pool), "total_s": pool_s, "per_s": len(pool) / pool_s},
        "fill": fills,
        "search": searches,
        "timings_s": timings,
        "turn_words": {"min": min(words), "mean": statistics.fmean(words), "max": max(words)},
        "examples": {"turns": [t.text for t in turns[:5]], "queries": queries[:5]},
    }
    head = summary(res)
    ctx.log(f"write: {head}")
    return res | head


def _side(ours: float, raw: float) -> dict[str, float]:
    return {"ours": ours, "raw": raw, "ours_over_raw": ours / raw}


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers (top-level keys of the suite's result): turns/s of add_turn and
    add_turns, search p50 at the largest size, and the write-path issue's targets checked."""
    single, batched = res["write"]["single"], res["write"]["batched"]
    largest = res["search"][-1]
    return {
        "add_turn_per_s": _side(single["ours"]["per_s"], single["raw"]["per_s"]),
        "add_turns_per_s": _side(batched["ours"]["per_s"], batched["raw"]["per_s"]),
        "search_p50_ms": _side(largest["ours_ms"]["p50"], largest["raw_ms"]["p50"]),
        "targets": {
            f"add_turns >= {TARGET_BATCHED_TPS:.0f} turns/s": batched["ours"]["per_s"]
            >= TARGET_BATCHED_TPS,
            f"search p50 and p95 <= {TARGET_SEARCH_RATIO}x raw at every size": all(
                max(s["ratio_p50"], s["ratio_p95"]) <= TARGET_SEARCH_RATIO for s in res["search"]
            ),
        },
    }


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(res: dict[str, Any]) -> str:
    cfg, single, batched = res["config"], res["write"]["single"], res["write"]["batched"]
    b_tps = batched["ours"]["per_s"]
    rows = [
        [
            f"add_turn, one turn per call ({single['calls']} calls), turns/s",
            f"{single['ours']['per_s']:.1f}",
            f"{single['raw']['per_s']:.1f}",
            f"{single['time_ratio']:.2f}x",
            "-",
            "-",
        ],
        [
            f"add_turns, batches of {batched['batch_size']} ({batched['ours']['items']} turns), "
            "turns/s",
            f"{b_tps:.1f}",
            f"{batched['raw']['per_s']:.1f}",
            f"{batched['time_ratio']:.2f}x",
            f">= {TARGET_BATCHED_TPS:.0f} turns/s",
            _met(b_tps >= TARGET_BATCHED_TPS),
        ],
    ]
    rows += [
        [
            f"fill to {f['size']:,} (+{f['added']:,}, precomputed embeddings), records/s",
            f"{f['ours']['per_s']:.0f}",
            f"{f['raw']['per_s']:.0f}",
            f"{f['time_ratio']:.2f}x",
            "-",
            "-",
        ]
        for f in res["fill"]
    ]
    rows += [
        [
            f"search k={cfg['k']} @ {s['size']:,} records, {p} ms",
            f"{s['ours_ms'][p]:.2f}",
            f"{s['raw_ms'][p]:.2f}",
            f"{s[f'ratio_{p}']:.3f}x",
            f"<= {TARGET_SEARCH_RATIO}x",
            _met(s[f"ratio_{p}"] <= TARGET_SEARCH_RATIO),
        ]
        for s in res["search"]
        for p in ("p50", "p95")
    ]
    head = ["metric", "ours", "raw chroma", "ratio (ours/raw time)", "target", "met?"]
    agree = ", ".join(f"{s['top_k_agreement']:.2f}" for s in res["search"])
    m = res.get("machine", {})
    load = m.get("loadavg_start"), m.get("loadavg_end")
    notes = [
        f"- Seed {cfg['seed']}; {cfg['queries']} timed queries per size after {cfg['warmup']} "
        "warm-up queries; ours and raw interleaved ABBA; ratio < 1: ours was faster.",
        f"- MiniLM alone, batched ({res['embed_pool']['texts']} texts): "
        f"{res['embed_pool']['per_s']:.1f} texts/s, the ceiling for any write path here.",
        f"- Fill: the first {cfg['pool']} records carry their real embeddings, later ones noisy "
        "copies of those (same vectors in both stores); fill rates exclude embedding.",
        f"- Top-{cfg['k']} agreement ours vs raw (same vectors; sanity check): {agree}.",
    ]
    if load[0] and load[1]:
        notes.append(
            f"- Load average {load[0][0]:.1f} at start, {load[1][0]:.1f} at end; "
            f"torch threads {m.get('torch_threads')}."
        )
    return md_table(head, rows) + "\n\n" + "\n".join(notes)


def plot(res: dict[str, Any], ax: Any) -> None:
    labels = ["add_turn", f"add_turns\n({res['config']['batch_size']})"]
    values = [res["write"]["single"]["time_ratio"], res["write"]["batched"]["time_ratio"]]
    for f in res["fill"]:
        labels.append(f"fill\n{f['size']:,}")
        values.append(f["time_ratio"])
    for s in res["search"]:
        labels.append(f"search p50\n{s['size']:,}")
        values.append(s["ratio_p50"])
    ax.bar(range(len(labels)), values)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.axhline(1.0, color="gray", linestyle="--")
    ax.set_ylabel("time, ours / raw Chroma (< 1: ours faster)")
    ax.set_title("write path")
