"""The ``consolidation`` suite's parts moved from the former ``benchmarks/consolidation.py``
(``api``, ``recipe``, ``throughput``, ``pb4k``) at tiny sizes on the tiny model: JSON fields and
sane values. The quick default (``trainers``) runs in test_bench.py."""

from __future__ import annotations

import json

import pytest

from lora_memory_plugin import InvalidInputError
from lora_memory_plugin.bench import BenchOptions, consolidation, run_bench
from lora_memory_plugin.bench._common import Context

TINY = {
    "consolidation.parts": "api,recipe,throughput,pb4k",
    "api_facts": 2,
    "pb4k_facts": 3,
    "recipe_facts": 2,
    "recipe_steps": 4,
    "eval_every": 2,
    "recipe_minutes": 1.0,
    "throughput_facts": 4,
    "throughput_steps": 2,
    "new_tokens": 4,
    "max_steps": 20,
}


def test_moved_parts_write_their_numbers(tmp_path, sharp_model_dir):
    out = tmp_path / "out"
    options = BenchOptions(
        quick=True, out=out, base_model=str(sharp_model_dir), progress=False, overrides=TINY
    )
    res = run_bench(["consolidation"], options)["suites"]["consolidation"]
    saved = json.loads((out / "bench-quick-consolidation.json").read_text())
    assert saved["parts"] == ["api", "recipe", "throughput", "pb4k"]
    assert saved["paper_recipe"]["lr"] == 5e-5 and saved["paper_recipe"]["batch"] == 8
    for key, n in (("api", 2), ("pb4k", 3)):
        a = res[key]
        assert a["facts"] == n and 0.0 <= a["em"] <= 1.0 and a["consolidate_wall_s"] > 0
        assert a["hits"] == round(a["em"] * n)
        assert (a["time_to_target_s"] is None) == (a["em"] < a["target"])
    p = res["paper"]
    assert p["recipe"]["rank"] == consolidation.RECIPE["rank"] == 4
    assert 1 <= p["steps"] <= 4 and p["curve"][0]["step"] == 0
    assert p["train_tokens"] > 0 and p["supervised_tokens"] > 0
    assert all(0.0 <= c["em"] <= 1.0 for c in p["curve"])
    assert p["stopped_because"] in {"target", "budget", "max_steps"}
    tp = res["throughput"]
    assert tp["ours"]["steps"] == tp["hf"]["steps"] == 2
    assert tp["ours_tokens_per_s"] > 0 and tp["hf_tokens_per_s"] > 0 and tp["ratio"] > 0
    # without the trainers part the findings still get ours / recipe times (from api / paper)
    assert set(res["ours"]) == {"time_to_target"} and set(res["recipe"]) == {"time_to_target"}
    md = (out / "bench-quick.md").read_text()
    assert "paper recipe (HF Trainer, r=4)" in md and "ours (`train_lora`)" in md


def test_parts_are_checked(tmp_path):
    def parts(value):
        ctx = Context(BenchOptions(quick=True, work=tmp_path, overrides={"parts": value}))
        ctx.suite = consolidation.NAME
        try:
            return consolidation.parts(ctx)
        finally:
            ctx.close()

    assert parts("api,pb4k") == ("api", "pb4k")
    assert parts(("recipe",)) == ("recipe",)
    with pytest.raises(InvalidInputError):
        parts("ours,nosuch")
