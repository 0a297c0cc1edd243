"""Item 3: writer processes and consolidations on one embedded store at the same time.

4 forked writer processes call ``add_turn`` while 2 processes consolidate the same namespace in a
loop (API and CLI in turn); then a deterministic race where B tries while A is inside its run.
Full counts (4 x 2,500): ``python -m lora_memory_plugin.bench.reliability --part concurrency``.
"""

from __future__ import annotations

import pytest

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin.bench.reliability.concurrency import run_concurrency, writer_text
from lora_memory_plugin.registry.modules import list_modules

pytestmark = pytest.mark.timeout(300)

WRITERS, TURNS = 4, 15


def test_writers_and_consolidations_lose_nothing_and_never_overlap(tmp_path, tiny_model_dir):
    res = run_concurrency(
        tmp_path / "c",
        str(tiny_model_dir),
        writers=WRITERS,
        turns=TURNS,
        consolidators=2,
        seed_records=8,
        timeout=240,
    )
    assert res["problems"] == [], res
    want = 8 + WRITERS * TURNS
    assert res["records_found"] == res["unique_ids"] == want and res["duplicates"] == 0
    assert res["writer_errors"] == 0 and res["missing"] == 0
    assert res["overlapping_runs"] == 0 and res["runs_started_while_writing"] >= 1
    assert res["race"]["b_api"] == "LockHeldError" and res["race"]["b_cli_exit"] == 3
    assert res["race"]["a"] in ("consolidated", "nothing_to_do")
    attempts = res["consolidation_attempts"]
    assert not [k for k in attempts if k.startswith("error_")], attempts

    # an independent look at the store from this process
    mem = LoRAMemory.open(tmp_path / "c" / "store", create=False)
    records = mem.get("shared")
    texts = {r.text for r in records}
    assert len(records) == len(texts) == want
    for w in range(WRITERS):
        for i in range(TURNS):
            assert writer_text(w, i) in texts
    held = [rid for m in list_modules(mem.path, "shared") for rid in m.record_ids]
    assert len(held) == len(set(held))  # no record trained into two modules
    consolidated = {r.id for r in records if r.metadata["status"] == "consolidated"}
    assert consolidated <= set(held)
