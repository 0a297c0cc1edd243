"""The ``server`` part: a real ``chroma run``, killed (SIGKILL / SIGTERM in turn) while a writer
thread calls ``add_turn`` / ``add_turns``: the write must fail with ``BackendError`` (never hang,
never another type), reads while it is down too; after a restart on the same data, every
acknowledged record is there, each record of the interrupted call is absent or complete, the
retried call completes, and search works."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ...errors import BackendError
from ...memory import LoRAMemory
from ...store.records import NewRecord
from ...testing import ChromaServer
from ._shared import sentence


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
        base = [f"baseline {i}: {sentence(rng)}" for i in range(30)]
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
                        f"round {rnd} write {counter + i}: {sentence(rng, 5)}" for i in range(n)
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
