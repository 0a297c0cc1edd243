"""The ``mixtures`` suite end to end on the tiny model (two facts, two mixtures, a few steps):
its JSON holds the former ``benchmarks/mixtures.py`` fields with sane values, its table the
same columns; and it is asked for by name, not part of the default run."""

from __future__ import annotations

import json

import pytest

from lora_memory_plugin import InvalidInputError
from lora_memory_plugin.bench import DEFAULT_SUITES, SUITES, BenchOptions, mixtures, run_bench
from lora_memory_plugin.bench.consolidation import train_overrides
from lora_memory_plugin.datasets.conversations import conversation_facts

RUN_FIELDS = {
    "mixture",
    "status",
    "held_out_em",
    "held_out_hits",
    "probe_recall",
    "drift",
    "steps",
    "train_seconds",
    "consolidate_seconds",
    "train_tokens",
    "synthetic",
    "notes",
    "answers",
}


def test_mixtures_is_a_suite_asked_for_by_name():
    assert SUITES["mixtures"] is mixtures and "mixtures" not in DEFAULT_SUITES


def test_mixtures_suite_on_the_tiny_model(tmp_path, sharp_model_dir, one_thread):
    out = tmp_path / "out"
    options = BenchOptions(
        quick=True,
        out=out,
        base_model=str(sharp_model_dir),
        progress=False,
        overrides={"facts": 2, "mixtures": "qa,original", "max_steps": 3},
    )
    report = run_bench(["mixtures"], options)
    res = json.loads((out / "bench-quick-mixtures.json").read_text())
    assert res["quick"] is True and res["environment"]["device"] and res["seconds"] > 0
    assert res["facts"] == 2 and res["seed"] == 0
    assert res["config"] == {
        "facts": 2,
        "mixtures": ["qa", "original"],
        "new_tokens": mixtures.NEW_TOKENS,
        "max_steps": 3,
    }
    assert set(res["reference"]) == {"base", "rag"}
    assert all(0.0 <= v <= 1.0 for v in res["reference"].values())
    assert [r["mixture"] for r in res["runs"]] == ["qa", "original"]
    for r in res["runs"]:
        assert set(r) == RUN_FIELDS
        assert 0 <= r["held_out_hits"] <= 2 and r["held_out_em"] == r["held_out_hits"] / 2
        assert r["status"] == "consolidated"  # the gate's target is ~0: the module commits
        assert 1 <= r["steps"] <= 3 and r["consolidate_seconds"] > r["train_seconds"] > 0
        assert r["train_tokens"] > 0 and isinstance(r["synthetic"], dict)
        assert r["probe_recall"] is None or 0.0 <= r["probe_recall"] <= 1.0
        assert [a["expected"] for a in r["answers"]] == [
            f.answer for f in conversation_facts(2, seed=0)
        ]
        assert all(a["mode"] == "lora" for a in r["answers"])  # the module answered
    assert res["best"] in ("qa", "original")
    assert report["suites"]["mixtures"]["runs"] == res["runs"]
    md = (out / "bench-quick.md").read_text()
    assert "| training data | held-out EM | probe recall |" in md
    assert "*(buffer: rag mode)*" in md and f"Best: **{res['best']}**" in md


def test_markdown_counts_kept_and_made_examples_and_reads_missing_gates():
    run = {
        "mixture": "qa",
        "held_out_em": 0.5,
        "held_out_hits": 1,
        "probe_recall": None,
        "drift": 0.25,
        "steps": 7,
        "train_seconds": 12.4,
        "consolidate_seconds": 20.6,
        "synthetic": {"qa": {"made": 5, "kept": 3}, "facts": {"made": 2, "kept": 2}},
    }
    res = {"facts": 2, "runs": [run], "reference": {"base": 0.0, "rag": 1.0}, "best": "qa"}
    md = mixtures.markdown(res)
    assert "| qa | **50%** (1/2) | n/a | 5 / 7 | 7 | 12 | 21 | +25.0% |" in md
    assert "| *(no memory: base mode)* | 0% |" in md and "| *(buffer: rag mode)* | 100% |" in md
    assert md.endswith("Best: **qa** (50%).")


@pytest.mark.parametrize("overrides", [{"mixtures": " , "}, {"facts": 0}])
def test_bad_sizes_are_refused(tmp_path, overrides):
    with pytest.raises(InvalidInputError):
        run_bench(["mixtures"], BenchOptions(out=tmp_path, progress=False, overrides=overrides))


def test_consolidation_train_overrides_replace_the_former_probe_settings():
    """``--set consolidation.train=...`` is what ``benchmarks/consolidation_probe.py --setting``
    took: TrainConfig fields, typed from the dataclass; unknown names and bad values refused."""
    got = train_overrides("rank=8, lr=2e-3,batch_size=48,max_seconds=600,alpha=None")
    assert got == {"rank": 8, "lr": 0.002, "batch_size": 48, "max_seconds": 600.0, "alpha": None}
    assert type(got["max_seconds"]) is float and train_overrides("") == {}
    for bad in ("nope=1", "rank", "rank=x"):
        with pytest.raises(InvalidInputError):
            train_overrides(bad)
