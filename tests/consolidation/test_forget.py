"""forget(): records leave the buffer and the parametric memory; other facts and namespaces stay.

And adapter integrity: a corrupt or swapped adapter file is caught at load, the module is
quarantined, the question falls back to rag, status reports it, the next run retrains it.
"""

from __future__ import annotations

import json

import pytest

from lora_memory_plugin import InvalidInputError, LockHeldError, UnknownNamespaceError
from lora_memory_plugin.cli.main import main
from lora_memory_plugin.consolidation.engine import consolidation_lock
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


def test_deleting_buffer_records_directly_is_repaired_by_the_next_run(store):
    ids = add(store, "ns", FACTS[:3])
    store.consolidate("ns", **FAST)
    store.buffer.delete("ns", [ids[0]])  # e.g. an integration deleting records, or a killed forget
    [r] = store.consolidate("ns", **FAST)
    assert r.status == "consolidated" and any("deleted records" in n for n in r.notes)
    [m] = store.modules("ns")
    assert set(m.record_ids) == set(ids[1:])


def test_forget_errors_and_lock(store, tmp_path):
    ids = add(store, "ns", FACTS[:1])
    with pytest.raises(InvalidInputError, match="exactly one"):
        store.forget("ns")
    with pytest.raises(InvalidInputError, match="exactly one"):
        store.forget("ns", ids, where={"kind": "turn"})
    with pytest.raises(UnknownNamespaceError):
        store.forget("nobody", ids)
    with consolidation_lock(store, "ns"), pytest.raises(LockHeldError):
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


@pytest.mark.parametrize("damage", ["corrupt", "swap", "base"])
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
    else:  # trained on other base weights
        manifest = json.loads((d / registry.MANIFEST).read_text())
        manifest["base_fingerprint"] = "0" * 64
        (d / registry.MANIFEST).write_text(json.dumps(manifest))
    ans = lora(store, "ns", FACTS[0][0])
    assert ans.mode == "rag" and any("quarantined" in n for n in ans.notes)
    assert store.modules("ns") == []
    [st] = [n for n in store.status().namespaces if n.namespace == "ns"]
    assert st.modules == 0 and [q["module_id"] for q in st.quarantined] == [m.module_id]
    [r] = store.consolidate("ns", **FAST)  # its records are retrained into a new module
    assert r.status == "consolidated" and r.records_in == 2
    assert FACTS[0][1] in lora(store, "ns", FACTS[0][0]).text
