"""forget(): records leave the buffer and the parametric memory; other facts and namespaces stay.

And adapter integrity: a corrupt or swapped adapter file is caught at load, the module is
quarantined, the question falls back to rag, status reports it, the next run retrains it. A
module trained on another base model is not damaged: it is skipped, never quarantined.
"""

from __future__ import annotations

import json
import logging

import pytest

from lora_memory_plugin import (
    InvalidInputError,
    LockHeldError,
    LoRAMemory,
    MissingRecordsError,
    UnknownNamespaceError,
)
from lora_memory_plugin.cli.main import main
from lora_memory_plugin.config import CONFIG_NAME
from lora_memory_plugin.consolidation.forget import (
    MASS_LOSS_MIN_RECORDS,
    MASS_LOSS_SHARE,
    drop_modules_missing_records,
)
from lora_memory_plugin.consolidation.lock import consolidation_lock
from lora_memory_plugin.registry import modules as registry

FACTS = [
    (f"What is the code of box {i}?", code)
    for i, code in enumerate(["4471", "9302", "1185", "7720"])
]
FAST = {"lr": 1e-2, "rank": 16, "max_steps": 400}


def add(store, ns, facts):
    return store.add_turns(ns, [{"content": f"Question: {q} Answer: {a}"} for q, a in facts])


def lora(store, ns, q):
    return store.ask(ns, q, mode="lora", max_new_tokens=6)


def test_forget_removes_the_fact_and_rebuilds_the_rest(store):
    ids = add(store, "ns", FACTS)
    other_ids = add(store, "other", FACTS[:2])
    store.consolidate("ns", **FAST)
    store.consolidate("other", **FAST)
    [old] = store.modules("ns")
    [theirs] = store.modules("other")
    assert FACTS[1][1] in lora(store, "ns", FACTS[1][0]).text

    report = store.forget("ns", [ids[1]], **FAST)
    assert report.deleted == 1 and report.modules_removed == (old.module_id,)
    assert report.records_reset == 3 and report.rebuild is not None
    assert report.rebuild.status == "consolidated" and report.rebuild.probe_recall == 1.0
    [new] = store.modules("ns")
    assert set(new.record_ids) == {ids[0], ids[2], ids[3]}
    assert store.count("ns") == 3 and all(
        r.metadata["module_id"] == new.module_id for r in store.get("ns")
    )
    for q, a in [FACTS[0], FACTS[2], FACTS[3]]:  # the module's other facts stay
        assert a in lora(store, "ns", q).text
    gone = lora(store, "ns", FACTS[1][0])  # the forgotten fact: at the base model's level
    base = store.ask("ns", FACTS[1][0], mode="base", max_new_tokens=6)
    assert FACTS[1][1] not in gone.text and FACTS[1][1] not in base.text
    assert all(FACTS[1][1] not in h.text for h in store.search("ns", FACTS[1][0], k=4))
    # the other namespace is untouched: same module, same records
    assert [m.module_id for m in store.modules("other")] == [theirs.module_id]
    assert {r.id for r in store.get("other")} == set(other_ids)
    assert FACTS[0][1] in lora(store, "other", FACTS[0][0]).text


def test_forget_by_filter_without_rebuild_then_consolidate(store):
    store.add_turns(
        "ns", [{"content": f"Question: {q} Answer: {a}", "session_id": "s1"} for q, a in FACTS[:2]]
    )
    store.add_turns(
        "ns", [{"content": f"Question: {q} Answer: {a}", "session_id": "s2"} for q, a in FACTS[2:]]
    )
    store.consolidate("ns", **FAST)
    report = store.forget("ns", where={"session_id": "s1"}, rebuild=False)
    assert report.deleted == 2 and report.rebuild is None and report.records_reset == 2
    assert store.modules("ns") == []  # nothing answers from the old module any more
    assert lora(store, "ns", FACTS[2][0]).mode == "rag"
    assert store.count("ns", status="buffered") == 2
    [r] = store.consolidate("ns", **FAST)
    assert r.status == "consolidated" and r.records_in == 2


def quarantined(store, ns):
    [st] = [n for n in store.status().namespaces if n.namespace == ns]
    return st.quarantined


def snapshot(store, ns):
    """What a refused repair must leave as it was: the module dirs and the records' state."""
    root = registry.modules_root(store.path, ns)
    records = sorted((r.id, r.metadata["status"], r.metadata["module_id"]) for r in store.get(ns))
    return sorted(p.name for p in root.iterdir()), records


def test_records_deleted_from_the_buffer_quarantine_their_module(store):
    """A record or two missing on their own (LoRAMemory.delete, a killed forget, or a buffer
    that lost them): the module is set aside with its files, never deleted; its other records
    go back to buffered and the next run retrains them."""
    ids = add(store, "ns", FACTS[:3])
    store.consolidate("ns", **FAST)
    [old] = store.modules("ns")
    store.buffer.delete("ns", [ids[0]])  # straight in Chroma: no forget knows of it
    with consolidation_lock(store._store, "ns"):
        assert drop_modules_missing_records(store._store, "ns") == ([old.module_id], 2)
    assert store.modules("ns") == [] and store.count("ns", status="buffered") == 2
    [q] = quarantined(store, "ns")
    assert q["module_id"] == old.module_id and "missing from the buffer" in q["reason"]
    kept = registry.modules_root(store.path, "ns") / f"{registry.QUARANTINE_PREFIX}{old.module_id}"
    assert (kept / registry.ADAPTER_WEIGHTS).is_file()
    assert registry.read_manifest(kept).record_ids == old.record_ids
    assert old.module_id not in lora(store, "ns", FACTS[0][0]).modules  # no longer routed to

    [r] = store.consolidate("ns", **FAST)
    assert r.status == "consolidated" and r.records_in == 2
    [m] = store.modules("ns")
    assert set(m.record_ids) == set(ids[1:])
    assert [q["module_id"] for q in quarantined(store, "ns")] == [old.module_id]  # still kept


def test_buffer_losing_most_records_refuses_and_changes_nothing(store, capsys):
    """A lost volume, a restored older DIR/chroma, a chroma_database typo: most records a
    module holds are gone. The module is the last copy of those facts: every consolidation
    path refuses with a typed error, changes nothing, and says what to check."""
    ids = add(store, "ns", FACTS)
    store.consolidate("ns", **FAST)
    [m] = store.modules("ns")
    lost = ids[:3]
    assert len(lost) >= MASS_LOSS_MIN_RECORDS and len(lost) > MASS_LOSS_SHARE * len(ids)
    store.buffer.delete("ns", lost)  # straight in Chroma, as a swapped buffer looks
    before = snapshot(store, "ns")

    with pytest.raises(MissingRecordsError, match="chroma_database") as err:
        store.consolidate("ns", **FAST)
    assert err.value.namespace == "ns" and set(err.value.missing_ids) == set(lost)
    assert "--missing" in str(err.value) and str(store.path / "chroma") in str(err.value)
    [r] = store.consolidate(**FAST)  # --all: reported as failed, not raised
    assert r.status == "failed" and r.notes[0].startswith("MissingRecordsError: ")
    assert main(["consolidate", str(store.path), "-n", "ns"]) == 1
    assert "missing from the buffer" in capsys.readouterr().err
    assert main(["consolidate", str(store.path), "--all", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] == 1 and out["reports"][0]["status"] == "failed"
    assert snapshot(store, "ns") == before and quarantined(store, "ns") == ()
    assert [x.module_id for x in store.modules("ns")] == [m.module_id]
    assert FACTS[0][1] in lora(store, "ns", FACTS[0][0]).text  # its record lost, still known

    # Deliberately, once the buffer is known to be the right one: forget the missing records.
    argv = ["forget", str(store.path), "-n", "ns", "--missing", "--no-rebuild", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modules_removed"] == [m.module_id] and out["records_reset"] == 1
    assert not (registry.modules_root(store.path, "ns") / m.module_id).exists()
    assert quarantined(store, "ns") == ()  # deleted, not kept: the user said so
    [r] = store.consolidate("ns", **FAST)
    assert r.status == "consolidated" and store.modules("ns")[0].record_ids == (ids[3],)


def test_forgetting_most_records_deletes_their_module(store):
    """forget is the deliberate path: however many records it forgets, the modules holding
    them are deleted (not quarantined, not refused), also when a killed forget is retried."""
    ids = add(store, "ns", FACTS)
    store.consolidate("ns", **FAST)
    [m] = store.modules("ns")
    store.buffer.delete("ns", ids[:3])  # a forget killed after deleting the records
    report = store.forget("ns", ids[:3], **FAST)  # ... and retried
    assert report.deleted == 0 and report.missing == tuple(ids[:3])
    assert report.modules_removed == (m.module_id,) and report.rebuild is not None
    assert report.rebuild.status == "consolidated"
    root = registry.modules_root(store.path, "ns")
    assert not [p for p in root.iterdir() if m.module_id in p.name]  # gone from disk
    [new] = store.modules("ns")
    assert new.record_ids == (ids[3],)


def test_a_forget_killed_between_modules_and_records_is_finished_by_consolidate(store, monkeypatch):
    """The modules go first: a forget killed after deleting them leaves the records visible in
    the buffer (never a module holding what the buffer no longer shows) and its intent; the next
    run deletes those records, however many, instead of retraining them."""
    from lora_memory_plugin.consolidation import forget as forget_mod

    ids = add(store, "ns", FACTS)
    store.consolidate("ns", **FAST)
    [m] = store.modules("ns")

    def crash(name):
        if name == "forget_module_removed":
            raise OSError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(forget_mod, "failpoint", crash)
        with pytest.raises(OSError, match="killed"):
            store.forget("ns", ids[:3])
    assert store.modules("ns") == [] and store.count("ns") == 4
    assert forget_mod.pending_forget(store._store, "ns") == set(ids[:3])
    [r] = store.consolidate("ns", **FAST)
    assert r.status == "consolidated" and r.records_in == 1
    assert [x.id for x in store.get("ns")] == [ids[3]]
    root = registry.modules_root(store.path, "ns")
    assert not [p for p in root.iterdir() if m.module_id in p.name]  # deleted, not quarantined
    assert store.modules("ns")[0].record_ids == (ids[3],)
    assert forget_mod.pending_forget(store._store, "ns") == set()


def test_forget_deletes_quarantined_modules_that_hold_the_record(store):
    """A quarantined adapter still holds what it was trained on: forgetting one of its
    records deletes it too; quarantined modules holding none of them stay."""
    ids = add(store, "ns", FACTS[:3])
    store.consolidate("ns", **FAST)
    [old] = store.modules("ns")
    store.buffer.delete("ns", [ids[0]])  # missing on its own: quarantined, kept
    with consolidation_lock(store._store, "ns"):
        drop_modules_missing_records(store._store, "ns")
    assert [q["module_id"] for q in quarantined(store, "ns")] == [old.module_id]
    [other] = add(store, "other", FACTS[3:])
    report = store.forget("ns", [ids[1]], rebuild=False)
    assert report.deleted == 1 and report.modules_removed == (old.module_id,)
    assert any("quarantined module" in n for n in report.notes)
    assert quarantined(store, "ns") == ()
    root = registry.modules_root(store.path, "ns")
    assert not [p for p in root.iterdir() if old.module_id in p.name]
    assert [r.id for r in store.get("other")] == [other]


def test_deleted_records_leave_no_routing_key(store):
    """A routing key holds its record's text (a route's best_key): delete and forget remove
    it at once, not at the next consolidation."""
    ids = add(store, "ns", FACTS[:3])
    store.consolidate("ns", **FAST)

    def keyed():
        return {h.record_id for h in store.routing.query("ns", FACTS[0][0], 20) if h.record_id}

    assert keyed() == set(ids)
    assert store.delete("ns", [ids[0]]) == 1
    assert keyed() == set(ids[1:])
    assert all(FACTS[0][1] not in h.text for h in store.routing.query("ns", FACTS[0][0], 20))
    store.forget("ns", [ids[1]], rebuild=False)
    assert keyed() == set()  # the module held ids[1]: it went, and its keys with it


def test_forget_reports_a_mass_loss_elsewhere_and_still_forgets(store):
    """Forgetting a record while another module's records went missing en masse: the
    forgotten record's module is deleted, the other module is left alone (a note says why)
    and nothing is rebuilt."""
    lost_ids = add(store, "ns", FACTS)
    store.consolidate("ns", **FAST)
    [big] = store.modules("ns")
    [doomed] = add(store, "ns", [("What is the code of box 9?", "5566")])
    store.consolidate("ns", **{**FAST, "rank": 8})  # another rank: a second module
    small = next(x for x in store.modules("ns") if x.module_id != big.module_id)
    assert small.record_ids == (doomed,)
    store.buffer.delete("ns", lost_ids[:3])

    report = store.forget("ns", [doomed], **FAST)
    assert report.deleted == 1 and report.modules_removed == (small.module_id,)
    assert report.rebuild is None and any("missing from the buffer" in n for n in report.notes)
    assert [x.module_id for x in store.modules("ns")] == [big.module_id]
    assert quarantined(store, "ns") == ()


def test_forget_errors_and_lock(store, tmp_path):
    ids = add(store, "ns", FACTS[:1])
    with pytest.raises(InvalidInputError, match="exactly one"):
        store.forget("ns")
    with pytest.raises(InvalidInputError, match="exactly one"):
        store.forget("ns", ids, where={"kind": "turn"})
    with pytest.raises(UnknownNamespaceError):
        store.forget("nobody", ids)
    with consolidation_lock(store._store, "ns"), pytest.raises(LockHeldError):
        store.forget("ns", ids)
    report = store.forget("ns", ["t-unknown"], rebuild=False)
    assert report.deleted == 0 and report.missing == ("t-unknown",)
    assert store.count("ns") == 1  # nothing lost by the failed calls


def test_cli_forget(store, capsys):
    ids = add(store, "ns", FACTS[:2])
    argv = ["forget", str(store.path), "-n", "ns", "--id", ids[0], "--no-rebuild", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deleted"] == 1 and out["rebuild"] is None
    assert main(["forget", str(store.path), "-n", "ns"]) == 1  # neither --id nor --where
    assert "--id ID" in capsys.readouterr().err
    assert store.count("ns") == 1


@pytest.mark.parametrize("damage", ["corrupt", "swap"])
def test_damaged_adapter_is_quarantined_and_retrained(store, damage):
    add(store, "ns", FACTS[:2])
    store.consolidate("ns", **FAST)
    [m] = store.modules("ns")
    d = registry.modules_root(store.path, "ns") / m.module_id
    weights = d / registry.ADAPTER_WEIGHTS
    if damage == "corrupt":
        data = bytearray(weights.read_bytes())
        data[-8:] = b"\x00" * 8
        weights.write_bytes(bytes(data))
    elif damage == "swap":  # a valid adapter file of another module
        add(store, "donor", FACTS[2:])
        store.consolidate("donor", **FAST)
        [donor] = store.modules("donor")
        weights.write_bytes(
            (
                registry.modules_root(store.path, "donor") / donor.module_id / weights.name
            ).read_bytes()
        )
    ans = lora(store, "ns", FACTS[0][0])
    assert ans.mode == "rag" and any("quarantined" in n for n in ans.notes)
    assert store.modules("ns") == []
    [st] = [n for n in store.status().namespaces if n.namespace == "ns"]
    assert st.modules == 0 and [q["module_id"] for q in st.quarantined] == [m.module_id]
    [r] = store.consolidate("ns", **FAST)  # its records are retrained into a new module
    assert r.status == "consolidated" and r.records_in == 2
    assert FACTS[0][1] in lora(store, "ns", FACTS[0][0]).text


def test_a_module_of_another_base_model_is_skipped_not_quarantined(
    store, sharp_model_dir, tiny_model_dir, caplog
):
    """Issue 16: a process on another base model leaves the module as it is (not quarantined,
    deleted or retrained) and answers without it; a process on its base model uses it again."""
    add(store, "ns", FACTS[:2])
    store.consolidate("ns", **FAST)
    [m] = store.modules("ns")
    d = registry.modules_root(store.path, "ns") / m.module_id
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    config = store.path / CONFIG_NAME
    saved = config.read_text()
    assert str(sharp_model_dir) in saved
    config.write_text(saved.replace(str(sharp_model_dir), str(tiny_model_dir)))
    other = LoRAMemory.open(store.path)  # another process: the tiny model, not the sharp one
    with caplog.at_level(logging.WARNING):
        answers = [lora(other, "ns", q) for q, _ in FACTS[:2]]
    for ans in answers:
        assert ans.mode == "rag" and ans.modules == ()
        assert any("another base model" in n and m.module_id in n for n in ans.notes)
    [warning] = [r.getMessage() for r in caplog.records if m.module_id in r.getMessage()]
    theirs = other.generator().fingerprint
    assert m.base_fingerprint[:12] in warning and theirs[:12] in warning
    assert f"open the store with base model {m.base_model}" in warning
    [r] = other.consolidate("ns", **FAST)  # its records stay consolidated into the module
    assert r.status == "nothing_to_do"
    [st] = [n for n in other.status().namespaces if n.namespace == "ns"]
    assert st.modules == 1 and st.quarantined == () and st.buffered == 0
    assert other.modules("ns") == [m]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == files
    config.write_text(saved)
    again = LoRAMemory.open(store.path)  # its own base model again
    ans = lora(again, "ns", FACTS[0][0])
    assert ans.mode == "lora" and ans.modules == (m.module_id,) and FACTS[0][1] in ans.text


def test_consolidating_on_another_base_model_never_extends_its_module(
    store, sharp_model_dir, tiny_model_dir, monkeypatch
):
    """New records go into a module of this base model: the other base model's module is not
    extended (retrained here, then replaced) even when it has room."""
    from lora_memory_plugin.consolidation import capacity, engine

    add(store, "ns", FACTS[:2])
    store.consolidate("ns", **FAST)
    config = store.path / CONFIG_NAME
    config.write_text(config.read_text().replace(str(sharp_model_dir), str(tiny_model_dir)))
    other = LoRAMemory.open(store.path)
    add(other, "ns", FACTS[2:3])
    plans: list[capacity.PlannedModule] = []

    def planned(*args, **kwargs):  # record the plan, train nothing
        plans.extend(capacity.plan_modules(*args, **kwargs))
        return []

    monkeypatch.setattr(engine, "plan_modules", planned)
    other.consolidate("ns", **FAST)
    assert len(plans) == 1 and plans[0].extends is None


def test_a_store_with_modules_never_gets_a_new_empty_buffer(store, sharp_model_dir):
    """The modules were trained from a buffer that must be there: a deleted DIR/chroma is not
    recreated empty at open (StoreError, nothing created); mkdir says "on purpose"."""
    import shutil

    from lora_memory_plugin import LoRAMemory, StoreError

    add(store, "ns", FACTS[:2])
    store.consolidate("ns", **FAST)
    [m] = store.modules("ns")
    store.close()
    shutil.rmtree(store.path / "chroma")
    with pytest.raises(StoreError, match="nothing was created") as err:
        LoRAMemory.open(store.path, base_model=str(sharp_model_dir))
    assert f"mkdir {store.path / 'chroma'}" in str(err.value)
    assert not (store.path / "chroma").exists()
    (store.path / "chroma").mkdir()
    again = LoRAMemory.open(store.path, base_model=str(sharp_model_dir))
    assert [x.module_id for x in again.modules("ns")] == [m.module_id]


def test_a_chroma_database_typo_is_refused_for_a_store_with_modules(
    chroma_server, tmp_path, sharp_model_dir, one_thread
):
    from lora_memory_plugin import LoRAMemory, StoreError

    db = f"db{abs(hash(str(tmp_path))) % 10**12}"
    mem = LoRAMemory.open(
        tmp_path / "s",
        base_model=str(sharp_model_dir),
        chroma_url=chroma_server,
        chroma_database=db,
    )
    add(mem, "ns", FACTS[:2])
    mem.consolidate("ns", **FAST)
    mem.close()
    cfg = tmp_path / "s" / CONFIG_NAME  # a typo made editing the config
    cfg.write_text(cfg.read_text().replace(f'"{db}"', f'"{db}-typo"'))
    with pytest.raises(StoreError, match="does not exist") as err:
        LoRAMemory.open(tmp_path / "s", chroma_url=chroma_server)
    assert f"{db}-typo" in str(err.value)
    fresh = LoRAMemory.open(  # a store without modules gets its database created, as before
        tmp_path / "t",
        base_model=str(sharp_model_dir),
        chroma_url=chroma_server,
        chroma_database=db + "-new",
    )
    assert fresh.namespaces() == []
