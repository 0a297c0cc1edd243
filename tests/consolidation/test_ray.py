"""``consolidate --all --ray``: one task per namespace on a real local Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin._filelock import file_lock
from lora_memory_plugin.cli.main import main
from lora_memory_plugin.fanout import consolidate_on_ray
from lora_memory_plugin.store.namespaces import encode_namespace
from lora_memory_plugin.testing import FACTS, FAST


def test_ray_consolidates_each_namespace_once_and_respects_the_locks(
    tmp_path: Path, sharp_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mem = LoRAMemory.open(tmp_path / "store", base_model=str(sharp_model_dir))
    for ns in ("alice", "bob"):
        mem.add_turns(ns, [{"content": f"Question: {q} Answer: {a}"} for q, a in FACTS])

    # another process (here: this one) consolidates bob: his task reports 'locked'
    lock = mem.path / "locks" / f"consolidate-{encode_namespace('bob')}.lock"
    seen: list[str] = []
    with file_lock(lock):
        reports = consolidate_on_ray(mem, options=FAST, on_done=lambda r: seen.append(r.namespace))
    assert [r.namespace for r in reports] == ["alice", "bob"] and sorted(seen) == ["alice", "bob"]
    assert reports[0].status == "consolidated" and len(mem.modules("alice")) == 1
    assert reports[1].status == "locked" and mem.modules("bob") == []

    # the CLI: --ray needs --all; with the lock free, bob is trained and alice has nothing new
    assert main(["consolidate", str(mem.path), "-n", "bob", "--ray", "--json"]) == 1
    assert "--all" in capsys.readouterr().err
    code = main(["consolidate", str(mem.path), "--all", "--ray", "--max-steps", "400", "--json"])
    out = json.loads(capsys.readouterr().out)
    status = {r["namespace"]: r["status"] for r in out["reports"]}
    assert status["alice"] == "nothing_to_do", out
    assert status["bob"] in ("consolidated", "kept_buffered"), out
    assert code == (0 if status["bob"] == "consolidated" else 1)
    assert not ray.is_initialized()  # the local cluster it started is gone
