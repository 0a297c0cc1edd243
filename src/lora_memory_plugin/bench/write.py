"""``write``: add and search through lora-memory next to raw Chroma doing the same work.

Both sides use the same MiniLM embedder and a cosine HNSW collection; the raw side writes the
same documents with comparable metadata. Calls alternate ours / raw one by one, so the ratios
hold on a noisy machine. A compact form of ``benchmarks/write_path.py`` (which also fills 100k
records); the numbers here are for the side-by-side table of a bench run.
"""

from __future__ import annotations

import time
from typing import Any

from ..datasets.conversations import conversation_facts
from ..datasets.phonebook import phonebook
from ._common import Context, md_table, median

NAME = "write"
NS = "write"


def _texts(n: int, seed: int) -> list[str]:
    facts = [f.turn for f in conversation_facts(min(n, 200), seed=seed)]
    facts += [f.text for f in phonebook(max(0, n - len(facts)), seed=seed + 1)]
    return facts[:n]


def run(ctx: Context) -> dict[str, Any]:
    import chromadb  # noqa: PLC0415 (heavy; loaded when the suite runs)
    from chromadb.config import Settings  # noqa: PLC0415 (as chromadb)

    singles = int(ctx.size("single_calls", 40, 300))
    batched = int(ctx.size("batched_turns", 512, 4096))
    queries = int(ctx.size("queries", 40, 200))
    mem = ctx.store(NAME)
    client = chromadb.PersistentClient(
        path=str(ctx.workdir / "raw-chroma"), settings=Settings(anonymized_telemetry=False)
    )
    raw = client.create_collection(
        "raw", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    emb = mem.embedder
    texts = _texts(singles + batched, ctx.options.seed)
    mem.add_turn(NS, "warm-up", role="user")  # creates the collection, loads the embedder
    raw.add(ids=["warm"], documents=["warm-up"], embeddings=emb.embed(["warm-up"]))

    def raw_add(ids: list[str], docs: list[str]) -> None:
        now = time.time()
        meta: dict[str, Any] = {
            "kind": "turn",
            "role": "user",
            "status": "buffered",
            "created_at": now,
        }
        raw.add(ids=ids, documents=docs, metadatas=[meta] * len(docs), embeddings=emb.embed(docs))

    t_ours = t_raw = 0.0
    for i, text in enumerate(texts[:singles]):
        t0 = time.perf_counter()
        mem.add_turn(NS, text, role="user")
        t1 = time.perf_counter()
        raw_add([f"s{i}"], [text])
        t_raw += time.perf_counter() - t1
        t_ours += t1 - t0
    bulk = texts[singles:]
    t0 = time.perf_counter()
    for j in range(0, len(bulk), 256):
        mem.add_turns(NS, [{"content": t, "role": "user"} for t in bulk[j : j + 256]])
    b_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for j in range(0, len(bulk), 256):
        raw_add([f"b{j + k}" for k in range(len(bulk[j : j + 256]))], bulk[j : j + 256])
    b_raw = time.perf_counter() - t0
    lat_ours, lat_raw = [], []
    for q in texts[: queries * 3 : 3]:
        t0 = time.perf_counter()
        mem.search(NS, q, k=5)
        t1 = time.perf_counter()
        raw.query(query_embeddings=emb.embed([q]), n_results=5)
        lat_raw.append(time.perf_counter() - t1)
        lat_ours.append(t1 - t0)
    out: dict[str, Any] = {
        "config": {"single_calls": singles, "batched_turns": len(bulk), "queries": len(lat_ours)},
        "records": mem.count(NS),
        "add_turn_per_s": {"ours": singles / t_ours, "raw": singles / t_raw},
        "add_turns_per_s": {"ours": len(bulk) / b_ours, "raw": len(bulk) / b_raw},
        "search_p50_ms": {"ours": 1000 * median(lat_ours), "raw": 1000 * median(lat_raw)},
    }
    for key in ("add_turn_per_s", "add_turns_per_s"):
        out[key]["ours_over_raw"] = out[key]["ours"] / out[key]["raw"]
    out["search_p50_ms"]["ours_over_raw"] = (
        out["search_p50_ms"]["ours"] / out["search_p50_ms"]["raw"]
    )
    ctx.log(f"write: {out}")
    return out


def markdown(res: dict[str, Any]) -> str:
    rows = [
        ["add_turn (one per call), turns/s", "add_turn_per_s", "{:.1f}"],
        ["add_turns (batches of 256), turns/s", "add_turns_per_s", "{:.0f}"],
        ["search p50, ms", "search_p50_ms", "{:.1f}"],
    ]
    table = [
        [label, f.format(res[k]["ours"]), f.format(res[k]["raw"]), f"{res[k]['ours_over_raw']:.2f}"]
        for label, k, f in rows
    ]
    return md_table(["operation", "lora-memory", "raw Chroma", "ours / raw"], table)


def plot(res: dict[str, Any], ax: Any) -> None:
    keys = ["add_turn_per_s", "add_turns_per_s"]
    ax.bar(["add_turn", "add_turns"], [res[k]["ours_over_raw"] for k in keys])
    ax.axhline(1.0, color="gray", linestyle="--")
    ax.set_ylabel("throughput, ours / raw Chroma")
    ax.set_title("write path")
