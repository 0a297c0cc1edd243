"""The ``serve`` suite end to end at a tiny size: a real ``lora-memory serve`` process on the
tiny model, concurrent clients, JSON + Markdown + PNG written."""

from __future__ import annotations

import json
from pathlib import Path

from lora_memory_plugin.bench import DEFAULT_SUITES, SUITES, BenchOptions, run_bench, serve

TINY = {
    "serve.clients": 4,
    "serve.ops": 10,  # one whole cycle of the mix per client
    "serve.questions": 6,
    "serve.namespaces": 2,
    "serve.prefill": 4,
    "serve.new_tokens": 3,
}


def test_serve_suite_writes_json_markdown_and_png(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert SUITES["serve"] is serve and "serve" not in DEFAULT_SUITES
    out = tmp_path / "out"
    options = BenchOptions(
        quick=True,
        out=out,
        work=tmp_path,
        base_model=str(tiny_model_dir),
        progress=False,
        overrides=TINY,
    )
    report = run_bench(["serve"], options)

    saved = json.loads((out / "bench-quick-serve.json").read_text())
    assert saved == json.loads(json.dumps(report["suites"]["serve"], default=str))
    cfg = saved["config"]
    assert (cfg["clients"], cfg["ops"], cfg["questions"]) == (4, 10, 6)
    assert cfg["base_model"] == str(tiny_model_dir)
    env = saved["environment"]
    assert env["cpu_model"] and env["cpu_count"] and env["device"] and env["packages"]["torch"]

    load = saved["load"]
    assert saved["errors"] == load["errors"] == 0, load["error_samples"]
    targets = saved["targets"]
    assert targets["no errors under load"] and targets["every write stored"]
    # the gain target is reported (the tiny model's few questions need not reach it)
    assert isinstance(targets["micro-batching >= 3x"], bool)
    assert load["operations"] == 4 * 10
    assert load["records"] == 2 * 4 + 4 * cfg["mix"]["add_turn"]  # pre-filled + written
    for op, weight in cfg["mix"].items():
        r = load["per_op"][op]
        assert r["calls"] == 4 * weight and r["errors"] == 0, (op, r)
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["max"], (op, lat)
    assert load["ask_batching"]["questions"] == 4 * cfg["mix"]["ask"]

    b = saved["batching"]
    assert b["one_client"]["clients"] == 1 and b["many_clients"]["clients"] == 4
    assert b["one_client"]["questions"] == b["many_clients"]["questions"] == 6
    assert b["one_client"]["batches"] == 6  # one at a time: one batch each
    assert b["one_client"]["qps"] > 0 and b["many_clients"]["qps"] > 0
    assert b["speedup"] == b["many_clients"]["qps"] / b["one_client"]["qps"]
    assert saved["qps"]["speedup"] == b["speedup"]

    md = (out / "bench-quick.md").read_text()
    assert "## serve" in md and "| ask |" in md and "questions/s" in md
    assert env["cpu_model"] in md  # the machine is named
    assert (out / "bench-quick-serve.png").stat().st_size > 1000
