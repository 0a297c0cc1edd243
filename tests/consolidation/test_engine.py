"""consolidate() end to end on the tiny model: train, gate, commit, mark, answer in lora mode."""

from __future__ import annotations

import pytest

from lora_memory_plugin import LockHeldError
from lora_memory_plugin.registry import modules as registry

FACTS = [
    (f"What is the code of box {i}?", code)
    for i, code in enumerate(["4471", "9302", "1185", "7720"])
]
FAST = {"lr": 1e-2, "rank": 16, "max_steps": 400}


def add_facts(store, facts):
    return store.add_turns("ns", [{"content": f"Question: {q} Answer: {a}"} for q, a in facts])


def test_consolidate_trains_commits_marks_and_answers(store):
    ids = add_facts(store, FACTS)
    [report] = store.consolidate("ns", **FAST)
    assert report.status == "consolidated", report
    assert report.records_in == 4 and report.probe_recall == 1.0 and report.steps > 0
    [module] = store.modules("ns")
    assert module.module_id == report.modules_created[0]
    assert set(module.record_ids) == set(ids) and len(module.probes) == 4
    recs = store.get("ns", ids)
    assert all(r.metadata["status"] == "consolidated" for r in recs)
    assert all(r.metadata["module_id"] == module.module_id for r in recs)
    ans = store.ask("ns", FACTS[2][0], mode="lora", max_new_tokens=6)
    assert ans.mode == "lora" and ans.modules == (module.module_id,) and ans.sources == ()
    assert FACTS[2][1] in ans.text
    base = store.ask("ns", FACTS[2][0], mode="base", max_new_tokens=6)
    assert base.modules == ()


def test_nothing_to_do_and_records_added_later(store):
    add_facts(store, FACTS[:2])
    first = store.consolidate("ns", **FAST)[0]
    assert store.consolidate("ns", **FAST)[0].status == "nothing_to_do"
    add_facts(store, FACTS[2:])
    second = store.consolidate("ns", **FAST)[0]
    assert second.status == "consolidated" and second.records_in == 2
    assert second.modules_replaced == first.modules_created  # extended: old + new
    [module] = store.modules("ns")
    assert len(module.record_ids) == 4
    for q, a in FACTS:
        assert a in store.ask("ns", q, mode="lora", max_new_tokens=6).text


def test_gate_keeps_records_buffered(store):
    add_facts(store, FACTS)
    [report] = store.consolidate("ns", lr=1e-5, rank=2, max_steps=2)
    assert report.status == "kept_buffered" and report.modules_created == ()
    assert "stay buffered" in report.notes[-1]
    assert store.modules("ns") == []
    assert store.count("ns", status="buffered") == 4


def test_interrupted_marking_is_finished_by_the_next_run(store):
    ids = add_facts(store, FACTS[:2])
    store.consolidate("ns", **FAST)
    store.buffer.update_metadata("ns", ids, {"status": "buffered", "module_id": ""})  # as if killed
    [report] = store.consolidate("ns", **FAST)
    assert report.status == "nothing_to_do" and "interrupted" in report.notes[0]
    assert store.count("ns", status="consolidated") == 2


def test_corrupt_module_falls_back_to_rag(store):
    add_facts(store, FACTS[:2])
    store.consolidate("ns", **FAST)
    [module] = store.modules("ns")
    w = registry.modules_root(store.path, "ns") / module.module_id / registry.ADAPTER_WEIGHTS
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    ans = store.ask("ns", FACTS[0][0], mode="lora", max_new_tokens=4)
    assert ans.mode == "rag" and "integrity" in ans.notes[0]


def test_lock_held_by_another_consolidation(store):
    from lora_memory_plugin._filelock import file_lock
    from lora_memory_plugin.store.namespaces import encode_namespace

    add_facts(store, FACTS[:1])
    lock = store.path / "locks" / f"consolidate-{encode_namespace('ns')}.lock"
    with file_lock(lock), pytest.raises(LockHeldError):
        store.consolidate("ns", **FAST)


def test_cli_consolidate_modules_and_lock(store, capsys):
    import json

    from lora_memory_plugin._filelock import file_lock
    from lora_memory_plugin.cli.main import main
    from lora_memory_plugin.store.namespaces import encode_namespace

    add_facts(store, FACTS[:1])
    d = str(store.path)
    lock = store.path / "locks" / f"consolidate-{encode_namespace('ns')}.lock"
    with file_lock(lock):
        assert main(["consolidate", d, "-n", "ns", "--json"]) == 3
        assert json.loads(capsys.readouterr().out)["error"] == "LockHeldError"
        assert main(["consolidate", d, "--all", "--json"]) == 3  # skipped, reported
        out = json.loads(capsys.readouterr().out)
        assert out["locked"] == 1 and out["reports"][0]["status"] == "locked"
    assert main(["consolidate", d, "-n", "ns", "--rank", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] == 0 and out["reports"][0]["status"] == "consolidated"
    assert main(["consolidate", d, "--all", "--json"]) == 0  # cron: nothing to do is success
    assert json.loads(capsys.readouterr().out)["reports"][0]["status"] == "nothing_to_do"
    assert main(["modules", d, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["modules"]
    assert row["namespace"] == "ns" and row["records"] == 1


def test_all_goes_on_when_one_namespace_fails(store, monkeypatch, capsys):
    """consolidate --all: a namespace whose run raises (a record that breaks tokenizing, a
    buffer that lost its records) is reported as failed; the namespaces after it still run."""
    from lora_memory_plugin.cli.main import main
    from lora_memory_plugin.consolidation import engine

    for ns, (q, a) in zip("abc", FACTS, strict=False):
        store.add_turns(ns, [{"content": f"Question: {q} Answer: {a}"}])
    real = engine.consolidate_namespace
    boom: type[BaseException] = RuntimeError

    def flaky(mem, namespace, options, **kw):
        if namespace == "b":
            raise boom("tokenizer exploded")
        return real(mem, namespace, options, **kw)

    monkeypatch.setattr(engine, "consolidate_namespace", flaky)
    reports = store.consolidate(**FAST)
    assert [(r.namespace, r.status) for r in reports] == [
        ("a", "consolidated"),
        ("b", "failed"),
        ("c", "consolidated"),
    ]
    assert reports[1].notes == ("RuntimeError: tokenizer exploded",)
    assert len(store.modules("c")) == 1 and store.modules("b") == []
    with pytest.raises(RuntimeError, match="tokenizer exploded"):  # one namespace: raised
        store.consolidate("b", **FAST)

    assert main(["consolidate", str(store.path), "--all"]) == 1  # cron sees the failure
    out = capsys.readouterr().out
    assert "'b': failed" in out and "note: RuntimeError: tokenizer exploded" in out
    assert "'c': nothing_to_do" in out

    boom = KeyboardInterrupt  # an interrupt still stops the whole run
    with pytest.raises(KeyboardInterrupt):
        store.consolidate(**FAST)


def test_a_record_too_long_to_train_stays_buffered_with_a_note(store):
    """A turn within the character limit can still be far too many tokens to train (32k emoji
    are ~100k): it is left buffered and searchable, the rest is consolidated, every run says so."""
    ids = add_facts(store, FACTS[:2])
    [long_id] = store.add_turns("ns", [{"content": "🦔 " * 3000}])
    [report] = store.consolidate("ns", **FAST)
    assert report.status == "consolidated" and report.records_in == 2, report
    assert any(
        "stay buffered, searchable but not trained" in n and long_id in n for n in report.notes
    )
    [module] = store.modules("ns")
    assert set(module.record_ids) == set(ids)
    assert [r.id for r in store.get("ns", status="buffered")] == [long_id]
    [again] = store.consolidate("ns", **FAST)
    assert again.status == "nothing_to_do" and long_id in " ".join(again.notes)
