"""Item 7: the Chroma server dies under a writer.

A real ``chroma run`` is killed (SIGKILL, then SIGTERM) while a thread writes: the write and
reads while it is down raise ``BackendError``; after a restart on the same data every
acknowledged record is there once, each record of the interrupted call is absent or complete,
the retried call completes and search works. Full counts: ``--part server``.
"""

from __future__ import annotations

import signal

import pytest

from lora_memory_plugin import BackendError, LoRAMemory
from lora_memory_plugin.bench.reliability.server import run_server_faults
from lora_memory_plugin.consolidation import engine
from lora_memory_plugin.consolidation import forget as forget_mod
from lora_memory_plugin.testing import ChromaServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.server]


def test_server_killed_mid_write_then_restarted(tmp_path):
    res = run_server_faults(tmp_path, rounds=2, seed=3)
    assert res["problems"] == [], res
    st = res["stats"]
    assert st["rounds"] == 2 and st["write_error_BackendError"] == 2
    assert st["killed_with_SIGKILL"] == 1 and st["killed_with_SIGTERM"] == 1
    for op in ("search", "get", "count", "add_turn"):
        assert st[f"down_{op}_BackendError"] == 2
    assert res["records_final"] == res["records_acknowledged"] >= 30
    assert res["error_seconds_max"] < 30  # a dead server is an error, not a hang


# ---- the server killed during marking and during forget ----------------------------------
# The server is SIGKILLed at the named failpoint (the engine's or forget's own, wrapped here, so
# the kill lands exactly between two writes of the real code path); the call must raise
# BackendError, and after a restart on the same data nothing stored is lost, no module keeps a
# forgotten fact, and a re-run completes.
def _kill_server_at(monkeypatch, module, point, server):
    real = module.failpoint

    def failpoint(name):
        if name == point:
            server.stop(signal.SIGKILL)
        real(name)

    monkeypatch.setattr(module, "failpoint", failpoint)


@pytest.fixture
def server(tmp_path):
    srv = ChromaServer(tmp_path / "chroma")
    srv.start()
    yield srv
    srv.stop(signal.SIGTERM)


@pytest.mark.parametrize("point", ["committed", "marking"])
def test_server_killed_during_marking_then_restarted(
    point, server, tmp_path, sharp_model_dir, monkeypatch, boxes
):
    """``committed``: the module is renamed into place, no record is marked yet. ``marking``:
    a module extending an older one has marked the new records, not yet the older ones."""
    mem = LoRAMemory.open(tmp_path / "m", base_model=str(sharp_model_dir), chroma_url=server.url)
    ids = boxes.add(mem, boxes.FACTS[:2])
    if point == "marking":
        mem.consolidate("ns", **boxes.FAST)
        [older] = mem.modules("ns")
        ids += boxes.add(mem, boxes.FACTS[2:])
    else:
        ids += boxes.add(mem, boxes.FACTS[2:])
    _kill_server_at(monkeypatch, engine, point, server)
    with pytest.raises(BackendError):
        mem.consolidate("ns", **boxes.FAST)
    server.start()
    monkeypatch.undo()
    boxes.intact(mem, ids)
    held = {rid for m in mem.modules("ns") for rid in m.record_ids}
    assert held == set(ids)  # the committed module kept everything it was trained on
    if point == "marking":
        assert older.module_id in {m.module_id for m in mem.modules("ns")}  # not removed yet
    mem.consolidate("ns", **boxes.FAST)  # the re-run completes: one module, every record marked
    [module] = mem.modules("ns")
    assert set(module.record_ids) == set(ids)
    assert all(r.metadata.get("module_id") == module.module_id for r in mem.get("ns"))
    boxes.intact(mem, ids)
    assert boxes.FACTS[2][1] in mem.ask("ns", boxes.FACTS[2][0], mode="lora", max_new_tokens=6).text


def test_server_killed_during_forget_then_restarted(
    server, tmp_path, sharp_model_dir, monkeypatch, boxes
):
    """Killed after the module holding the record is removed, before the record is deleted:
    the record stays visible with the forget's intent, no module answers it, and the next
    forget (or consolidate) finishes the job."""
    mem = LoRAMemory.open(tmp_path / "m", base_model=str(sharp_model_dir), chroma_url=server.url)
    ids = boxes.add(mem, boxes.FACTS)
    mem.consolidate("ns", **boxes.FAST)
    _kill_server_at(monkeypatch, forget_mod, "forget_module_removed", server)
    with pytest.raises(BackendError):
        mem.forget("ns", [ids[1]], rebuild=False)
    server.start()
    monkeypatch.undo()
    assert not any(ids[1] in m.record_ids for m in mem.modules("ns"))  # removed first
    boxes.intact(mem, ids)  # nothing else lost; the record waits for its deletion
    assert ids[1] in forget_mod.pending_forget(mem._store, "ns")
    mem.consolidate("ns", **boxes.FAST)  # the intent is honoured: deleted, not retrained
    boxes.intact(mem, [ids[0], ids[2]])
    assert not forget_mod.pending_forget(mem._store, "ns")
    assert not any(ids[1] in m.record_ids for m in mem.modules("ns"))
    assert not [h for h in mem.search("ns", boxes.FACTS[1][0], k=3) if boxes.FACTS[1][1] in h.text]
    assert boxes.FACTS[0][1] in mem.ask("ns", boxes.FACTS[0][0], mode="lora", max_new_tokens=6).text
