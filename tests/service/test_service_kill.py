"""Durability of the memory service under ``kill -9``: every write the service acknowledged
(HTTP 200 with its record id) is in the store after the process is killed mid-traffic and
restarted, and the restarted service takes writes again.

The service runs as a user runs it, ``lora-memory serve STORE --no-auth`` in its own process,
on embedded Chroma (the store's own files, the case where a kill can lose data) and on a real
``chroma run`` server (the service is killed, the Chroma server lives on).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin.remote import RemoteMemory
from lora_memory_plugin.testing import ServiceProcess

WRITERS = 4
NAMESPACES = ("user-0", "user-1")  # two writers per namespace: concurrent writes to each
WRITE_SECONDS = 1.5  # writes under way before the kill
MIN_ACKED = 8  # fewer acknowledged writes would not test much


def write_until_stopped(
    url: str, writer: int, stop: threading.Event, acked: list[tuple[str, str, str]]
) -> None:
    """Add turns one at a time; record (namespace, id, text) of each the service answered 200
    for. Ends at the first failure (the service was killed) or when ``stop`` is set."""
    remote = RemoteMemory(url, timeout=10)
    ns = NAMESPACES[writer % len(NAMESPACES)]
    i = 0
    try:
        while not stop.is_set():
            text = f"writer {writer} turn {i}: my locker code is {1000 + i}."
            try:
                rid = remote.add_turn(ns, text, session_id=f"w{writer}")
            except Exception:  # the connection died with the server: not acknowledged
                return
            acked.append((ns, rid, text))
            i += 1
    finally:
        remote.close()


@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_acknowledged_writes_survive_kill_9(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path
) -> None:
    store = tmp_path / "store"
    if backend == "server":
        url = request.getfixturevalue("chroma_server")
        db = f"kill-{os.getpid()}-{time.monotonic_ns()}"
        LoRAMemory.open(
            store, chroma_url=url, base_model=str(tiny_model_dir), chroma_database=db
        ).close()
    else:
        LoRAMemory.open(store, base_model=str(tiny_model_dir)).close()

    acked: list[tuple[str, str, str]] = []
    server = ServiceProcess(store, tmp_path)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    try:
        server.start(timeout=60, env=env)
        url = server.url
        # one write before the clock starts: the service loads its embedder on the first one
        first = RemoteMemory(url).add_turn(NAMESPACES[0], "warm-up: my name is Ada.")
        acked.append((NAMESPACES[0], first, "warm-up: my name is Ada."))
        stop = threading.Event()
        threads = [
            threading.Thread(target=write_until_stopped, args=(url, w, stop, acked))
            for w in range(WRITERS)
        ]
        for t in threads:
            t.start()
        time.sleep(WRITE_SECONDS)
        code = server.stop(signal.SIGKILL, timeout=30)  # mid-traffic: requests are in flight
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert code == -signal.SIGKILL
        assert len(acked) >= MIN_ACKED, (
            f"only {len(acked)} writes were acknowledged before the kill"
        )

        server.start(timeout=60, env=env)  # the same store (and port) again
        remote = RemoteMemory(url)
        for ns in NAMESPACES:
            stored = {r.id: r.text for r in remote.get(ns)}
            want = {rid: text for n, rid, text in acked if n == ns}
            missing = sorted(set(want) - set(stored))
            assert not missing, f"{ns}: {len(missing)} acknowledged writes lost: {missing[:5]}"
            assert all(stored[rid] == text for rid, text in want.items())
        # the store still takes writes (and finds them) after the crash
        rid = remote.add_turn(NAMESPACES[0], "after the crash: my dog is called Biscuit.")
        assert [r.text for r in remote.get(NAMESPACES[0], [rid])] == [
            "after the crash: my dog is called Biscuit."
        ]
        assert remote.search(NAMESPACES[0], "what is my dog called?", k=1)[0].id == rid
        # a clean stop after the recovery (uvicorn exits by the signal it caught)
        assert server.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
    finally:
        server.stop(signal.SIGKILL)  # a no-op when the test got this far
