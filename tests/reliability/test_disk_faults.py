"""A full disk (ENOSPC) or a failing one (EIO) at each write point of the commit and forget
paths: the caller gets a typed StoreIOError (with the errno), no lock stays held, no record or
committed module is lost or left half-written, and a re-run completes. The points before any
write (``selected``, ``trained``) leave nothing to check. SIGKILL at the same points: the kill
tests of test_engine; these run in-process, so cleanup code and lock release run too."""

from __future__ import annotations

import errno

import pytest

from lora_memory_plugin import LoRAMemory, StoreIOError
from lora_memory_plugin._failpoints import ENV

ERRNOS = {"enospc": errno.ENOSPC, "eio": errno.EIO}


@pytest.mark.parametrize(
    ("point", "fault"),
    [
        ("saved", "enospc"),
        ("module_written", "eio"),
        ("committed", "enospc"),
        ("marking", "eio"),
    ],
)
def test_a_failed_write_while_consolidating_loses_nothing(
    point, fault, tmp_path, sharp_model_dir, monkeypatch, boxes
):
    mem = LoRAMemory.open(tmp_path / "m", base_model=str(sharp_model_dir))
    ids = boxes.add(mem, boxes.FACTS)
    monkeypatch.setenv(ENV, f"{point}={fault}")
    with pytest.raises(StoreIOError, match="nothing stored was lost") as e:
        mem.consolidate("ns", **boxes.FAST)
    assert e.value.errno == ERRNOS[fault] and isinstance(e.value.__cause__, OSError)
    assert isinstance(e.value, OSError) and str(e.value).startswith("consolidation of 'ns'")
    boxes.intact(mem, ids)
    monkeypatch.delenv(ENV)
    [report] = mem.consolidate("ns", **boxes.FAST)  # the lock was released; the re-run completes
    [module] = mem.modules("ns")
    assert report.status == "consolidated" or point in ("committed", "marking")
    assert set(module.record_ids) == set(ids)
    assert all(r.metadata.get("module_id") == module.module_id for r in mem.get("ns"))
    boxes.intact(mem, ids)
    assert boxes.FACTS[0][1] in mem.ask("ns", boxes.FACTS[0][0], mode="lora", max_new_tokens=6).text


@pytest.mark.parametrize(
    ("point", "fault"), [("forget_module_removed", "enospc"), ("forget_deleted", "eio")]
)
def test_a_failed_write_while_forgetting_never_leaves_the_fact_in_a_module(
    point, fault, tmp_path, sharp_model_dir, monkeypatch, boxes
):
    mem = LoRAMemory.open(tmp_path / "m", base_model=str(sharp_model_dir))
    ids = boxes.add(mem, boxes.FACTS)
    mem.consolidate("ns", **boxes.FAST)
    monkeypatch.setenv(ENV, f"{point}={fault}")
    with pytest.raises(StoreIOError) as e:
        mem.forget("ns", [ids[1]], rebuild=False)
    assert e.value.errno == ERRNOS[fault]
    assert not any(ids[1] in m.record_ids for m in mem.modules("ns"))  # removed first
    left = ids if point == "forget_module_removed" else [ids[0], ids[2]]
    boxes.intact(mem, left)
    monkeypatch.delenv(ENV)
    mem.forget("ns", [ids[1]], rebuild=False)  # the re-run completes the forget
    boxes.intact(mem, [ids[0], ids[2]])
    assert not [h for h in mem.search("ns", boxes.FACTS[1][0], k=3) if boxes.FACTS[1][1] in h.text]


def test_consolidate_all_reports_a_disk_failure_per_namespace(
    tmp_path, sharp_model_dir, monkeypatch, boxes
):
    mem = LoRAMemory.open(tmp_path / "m", base_model=str(sharp_model_dir))
    ids = boxes.add(mem, boxes.FACTS)
    monkeypatch.setenv(ENV, "module_written=enospc")
    [report] = mem.consolidate(None, **boxes.FAST)
    assert report.status == "failed" and "StoreIOError" in report.notes[0]
    boxes.intact(mem, ids)


def test_unknown_failpoint_action_is_refused(monkeypatch):
    from lora_memory_plugin._failpoints import failpoint

    monkeypatch.setenv(ENV, "saved=bogus")
    with pytest.raises(ValueError, match="unknown action"):
        failpoint("saved")
    failpoint("other")  # not armed: nothing happens
