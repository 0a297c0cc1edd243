"""`lora-memory bench recall` on the tiny model: routing, TIES merges, modes and batching over a
namespace split into modules, every number in the JSON and the Markdown."""

from __future__ import annotations

import json

import pytest

from lora_memory_plugin import InvalidInputError
from lora_memory_plugin.bench import DEFAULT_SUITES, SUITES, BenchOptions, recall, run_bench
from lora_memory_plugin.bench._common import Context
from lora_memory_plugin.testing import FAST

TINY = {
    "facts": 4,
    "questions": 3,
    "modules": 2,
    "rank": FAST["rank"],
    "new_tokens": 16,
    "max_steps": FAST["max_steps"],
}


@pytest.fixture
def fast_stores(monkeypatch, one_thread):
    """The suite's stores train at FAST's learning rate: the sharpened tiny model then commits
    PhoneBook modules in seconds (the default rate is for real models)."""
    store = Context.store

    def fast(self, name):
        mem = store(self, name)
        mem.update_config(consolidation={"lr": FAST["lr"]})
        return mem

    monkeypatch.setattr(Context, "store", fast)


def _options(tmp_path, model, **overrides):
    return BenchOptions(
        quick=True,
        out=tmp_path / "out",
        base_model=str(model),
        progress=False,
        overrides=TINY | overrides,
    )


def _unit(x):
    return x is not None and 0.0 <= x <= 1.0


def test_recall_suite_measures_every_part(tmp_path, sharp_model_dir, fast_stores):
    assert SUITES["recall"] is recall and "recall" not in DEFAULT_SUITES  # asked for by name
    options = _options(tmp_path, sharp_model_dir)
    report = run_bench(["recall"], options)
    res = json.loads((options.out / "bench-quick-recall.json").read_text())
    assert res["seconds"] == report["suites"]["recall"]["seconds"] > 0
    assert res["environment"]["device"] and res["quick"] is True
    c = res["config"]
    assert (c["facts"], c["questions"], c["modules"], c["rank"]) == (4, 3, 2, 16)
    assert c["parts"] == list(recall.PARTS) and c["data"] == "generated"
    assert res["facts"] == 4 and res["knowledge_tokens"] > 0
    assert res["modules"] == 2 and res["build"]["status"] == "consolidated"  # 2 facts each
    assert res["build"]["probe_recall"] == 1.0 and res["build"]["seconds"] > 0
    assert len(res["build"]["modules"]) == 2

    rt = res["routing"]
    assert rt["questions"] == 3
    for key in ("routing_accuracy", "routed_top1_em", "oracle_em", "confidence_p50"):
        assert _unit(rt[key]), key
    assert rt["routing_accuracy"] == 1.0 and rt["wrong_routes"] == []  # 3 distinct names
    assert rt["fell_back"] == 0 and rt["routed_seconds"] > 0

    t = res["ties"]
    assert t["density"] == 0.5 and _unit(t["top3_ties_em"]) and _unit(t["all_ties_em"])
    assert t["merges_built"] >= 1 and t["seconds"] > 0

    assert set(res["modes"]) == set(recall.MODES)
    for mode, m in res["modes"].items():
        assert _unit(m["em"]), mode
        assert 0 < m["p50_ms"] <= m["p95_ms"]
        assert 0 <= m["new_tokens_mean"] <= 16 and m["ms_per_new_token"] > 0
        assert sum(m["answered_as"].values()) == 3 and m["interleaved"] is True
    assert res["modes"]["base"]["answered_as"] == {"base": 3}
    assert res["modes"]["lora"]["answered_as"] == {"lora": 3}
    assert res["modes"]["base"]["em"] == 0.0  # random numbers: no model knows them unaided
    icl, base = res["modes"]["icl"], res["modes"]["base"]
    assert icl["prompt_tokens_mean"] > base["prompt_tokens_mean"]

    b = res["batching"]
    assert b["questions"] == 3 and 0 <= b["same_text"] <= 3
    assert b["modules_per_batch_16"] == 2  # the questions interleave both modules
    for key in ("one_at_a_time_qps", "ask_many_qps", "ask_many_peft_loop_qps"):
        assert b[key] > 0, key
    assert b["speedup"] == pytest.approx(b["ask_many_qps"] / b["one_at_a_time_qps"])

    s = res["summary"]
    assert s["routed_top1_em"] == rt["routed_top1_em"] and s["all_ties_em"] == t["all_ties_em"]
    assert s["lora_p50_vs_base"] == pytest.approx(
        res["modes"]["lora"]["p50_ms"] / res["modes"]["base"]["p50_ms"]
    )
    assert s["batching_speedup"] == b["speedup"]

    md = (options.out / "bench-quick.md").read_text()
    assert "## recall" in md and "![recall](bench-quick-recall.png)" in md
    assert f"| oracle routing (module holding the record) | {100 * rt['oracle_em']:.1f}% |" in md
    assert "TIES merge of all modules" in md and "lora p50 / base p50" in md
    assert f"{b['same_text']}/3 identical answers" in md
    assert (options.out / "bench-quick-recall.png").stat().st_size > 1000


def test_recall_parts_run_alone_and_unknown_parts_fail(tmp_path, sharp_model_dir, fast_stores):
    options = _options(tmp_path, sharp_model_dir, parts="modes", facts=2, questions=2)
    res = run_bench(["recall"], options)["suites"]["recall"]
    assert "modes" in res and not {"routing", "ties", "batching"} & set(res)
    assert res["summary"]["routed_top1_em"] is None and res["summary"]["batching_speedup"] is None
    assert res["summary"]["lora_p50_vs_base"] > 0
    md = recall.markdown(res)
    assert "| mode | EM |" in md and "Routing over" not in md and "Batched" not in md
    with pytest.raises(InvalidInputError, match="nosuch"):
        run_bench(["recall"], _options(tmp_path, sharp_model_dir, parts="modes,nosuch"))
