"""The bounded dict behind per-namespace caches."""

from __future__ import annotations

import pytest

from lora_memory_plugin._lru import LRUDict


def test_keeps_the_most_recently_used_entries() -> None:
    d: LRUDict[str, int] = LRUDict(2)
    d["a"], d["b"] = 1, 2
    assert d.get("a") == 1  # "a" is now the most recent
    d["c"] = 3  # evicts "b"
    assert "b" not in d and d.get("a") == 1 and d.get("c") == 3 and len(d) == 2
    assert d.pop("a") == 1 and d.pop("a") is None and d.get("zz", 9) == 9
    d.clear()
    assert len(d) == 0
    with pytest.raises(ValueError, match="maxsize"):
        LRUDict(0)


def test_buffer_and_routing_caches_stay_bounded(tmp_path, tiny_model_dir, monkeypatch) -> None:
    from lora_memory_plugin import LoRAMemory

    mem = LoRAMemory.open(tmp_path / "m", base_model=str(tiny_model_dir))
    mem.buffer._collections.maxsize = 3
    for i in range(6):
        mem.add_turn(f"tenant-{i}", "hello")
    assert len(mem.buffer._collections) == 3
    assert [r.text for r in mem.get("tenant-0")] == ["hello"]  # evicted, looked up again
