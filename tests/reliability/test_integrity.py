"""Item 6: a damaged adapter is caught at load, quarantined, and retrained; a module of other
base weights is skipped, not quarantined, and left as it is.

One round of each damage (a flipped byte in the weights, another module's valid weights) and
of a manifest naming other base weights, on the sharpened tiny model. Full counts: ``--part
integrity``; tests/consolidation/test_forget.py checks each case in more detail.
"""

from __future__ import annotations

import pytest

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin.bench.reliability.integrity import DAMAGES, OTHER_BASE, run_integrity

pytestmark = pytest.mark.timeout(300)


def test_damage_is_quarantined_then_retrained_and_other_base_skipped(
    tmp_path, sharp_model_dir, one_thread
):
    mem = LoRAMemory.open(tmp_path / "store", base_model=str(sharp_model_dir))
    res = run_integrity(mem, rounds=1)
    assert res["problems"] == [], res
    for damage in DAMAGES:
        assert res["stats"][f"{damage}_rounds"] == 1
        assert res["stats"][f"{damage}_caught"] == 1
        assert res["stats"][f"{damage}_retrained"] == 1
    base = OTHER_BASE
    assert res["stats"][f"{base}_rounds"] == 1
    assert res["stats"][f"{base}_skipped"] == 1
    assert res["stats"][f"{base}_kept"] == 1
