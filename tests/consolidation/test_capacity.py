"""Capacity planning: the planner (pure), the capacity choice, the config section, the
PhoneBook-style generator, calibration and multi-module consolidation on the tiny model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lora_memory_plugin import ConfigError, InvalidInputError
from lora_memory_plugin.config import StoreConfig
from lora_memory_plugin.consolidation.capacity import (
    BUILTIN_CAPACITY,
    Capacity,
    choose_capacity,
    plan_modules,
)
from lora_memory_plugin.datasets.phonebook import phonebook
from lora_memory_plugin.registry.modules import ModuleManifest
from lora_memory_plugin.types import Record


def words(text: str) -> int:
    return len(text.split())


def rec(i: int, n_words: int = 10) -> Record:
    return Record(f"r{i}", " ".join(["w"] * n_words), {})


def manifest(mid: str, ids: list[str], tokens: int, rank: int = 16) -> ModuleManifest:
    return ModuleManifest(
        module_id=mid,
        namespace="ns",
        record_ids=tuple(ids),
        base_model="m",
        base_fingerprint="f",
        rank=rank,
        alpha=rank,
        knowledge_tokens=tokens,
    )


CAP = Capacity(rank=16, alpha=16, tokens=50, budget=45, calibrated=True)


def test_plan_packs_new_modules_under_the_budget():
    plans = plan_modules([], {}, [rec(i) for i in range(10)], words, CAP)
    assert [len(p.new_ids) for p in plans] == [4, 4, 2]  # 40 <= 45 < 50 tokens
    assert all(p.tokens <= CAP.budget for p in plans)
    assert [rid for p in plans for rid in p.new_ids] == [f"r{i}" for i in range(10)]
    assert all(p.extends is None for p in plans)


def test_plan_extends_the_newest_module_with_room_then_starts_new_ones():
    old = manifest("m-1", ["o1", "o2"], tokens=20)
    olds = {"o1": Record("o1", " ".join(["w"] * 10)), "o2": Record("o2", " ".join(["w"] * 10))}
    plans = plan_modules([old], olds, [rec(i) for i in range(5)], words, CAP)
    assert plans[0].extends is old
    assert [r.id for r in plans[0].records] == ["o1", "o2", "r0", "r1"]  # old records first
    assert plans[0].new_ids == ["r0", "r1"] and plans[0].tokens == 40
    assert plans[1].extends is None and plans[1].new_ids == ["r2", "r3", "r4"]


def test_plan_never_extends_a_full_module_or_one_of_another_rank():
    full = manifest("m-1", ["o1"], tokens=45)
    assert plan_modules([full], {}, [rec(0)], words, CAP)[0].extends is None
    other = manifest("m-2", ["o1"], tokens=5, rank=4)
    assert plan_modules([other], {}, [rec(0)], words, CAP)[0].extends is None


def test_plan_never_extends_a_module_of_other_base_weights():
    """Retraining it on this base model would replace the module its own base model uses."""
    ours = manifest("m-1", ["o1"], tokens=5)
    theirs = replace(manifest("m-2", ["o2"], tokens=5), base_fingerprint="g")
    olds = {"o1": Record("o1", "w"), "o2": Record("o2", "w")}
    [plan] = plan_modules([ours, theirs], olds, [rec(0)], words, CAP, base_fingerprint="f")
    assert plan.extends is ours and [r.id for r in plan.records] == ["o1", "r0"]
    [plan] = plan_modules([theirs], olds, [rec(0)], words, CAP, base_fingerprint="f")
    assert plan.extends is None and plan.new_ids == ["r0"]
    assert plan_modules([theirs], olds, [rec(0)], words, CAP)[0].extends is theirs  # no filter


def test_a_record_larger_than_a_module_gets_its_own_with_a_note():
    plans = plan_modules([], {}, [rec(0), rec(1, 80), rec(2)], words, CAP)
    assert [p.new_ids for p in plans] == [["r0"], ["r1"], ["r2"]]
    assert "alone has 80 tokens" in plans[1].notes[0]


def test_choose_capacity_prefers_token_efficient_ranks_and_applies_the_margin():
    table = {4: 400, 16: 1200, 64: 2000}
    cap = choose_capacity(table, None, 0.9, calibrated=True)
    assert (cap.rank, cap.alpha, cap.tokens, cap.budget) == (4, 4, 400, 360)
    assert choose_capacity(table, 16, 0.5, calibrated=True).budget == 600
    scaled = choose_capacity(table, 8, 0.9, calibrated=True)  # not measured: scaled, flagged
    assert scaled.tokens == 800 and not scaled.calibrated and scaled.budget == 800
    builtin = choose_capacity(BUILTIN_CAPACITY, 16, 0.9, calibrated=False)
    assert builtin.budget == builtin.tokens == BUILTIN_CAPACITY[16]
    with pytest.raises(InvalidInputError):
        choose_capacity({}, None, 0.9, calibrated=True)


def test_consolidation_config_section_round_trips_and_validates():
    cfg = StoreConfig.from_dict(
        {"consolidation": {"capacity_tokens": {"4": 300}, "mixture": "all"}}
    )
    assert cfg.consolidation.capacity_table() == {4: 300}
    again = StoreConfig.from_dict(cfg.to_dict())
    assert again.consolidation == cfg.consolidation
    for bad in (
        {"mixture": "qa+poetry"},
        {"capacity_tokens": {"four": 300}},
        {"capacity_margin": 1.5},
        {"writer": "gpt"},
        {"capacity_tokens": []},
    ):
        with pytest.raises(ConfigError):
            StoreConfig.from_dict({"consolidation": bad})


def test_phonebook_generator_is_deterministic_and_distinct():
    a, b = phonebook(300, seed=1), phonebook(300, seed=1)
    assert a == b and a != phonebook(300, seed=2)
    assert len({f.name for f in a}) == 300 and len({f.number for f in a}) == 300
    f = a[0]
    assert f.text == f"Question: What is the phone number of {f.name}? Answer: {f.number}"
    with pytest.raises(ValueError, match="at most"):
        phonebook(10**6)


# ---- on the tiny model ---------------------------------------------------------------------

FAST = {"lr": 1e-2, "max_steps": 300, "drift_max": 1e6}


def code_text(i: int) -> str:
    return f"Question: What is the code of box {i}? Answer: {1000 + 37 * i}"


def add_codes(store, n, start=0):
    return store.add_turns("ns", [{"content": code_text(i)} for i in range(start, start + n)])


def room_for(store, first: int, count: int) -> int:
    """A capacity holding exactly records ``first .. first+count-1`` (tokens vary by digits)."""
    return sum(store.generator().count_tokens(code_text(i)) for i in range(first, first + count))


def test_consolidation_packs_records_into_several_modules_and_routes_answers(store):
    cap = room_for(store, 0, 3)
    assert room_for(store, 3, 2) <= cap < room_for(store, 0, 4)
    store.update_config(consolidation={"capacity_tokens": {"16": cap}, "capacity_margin": 1.0})
    ids = add_codes(store, 5)
    [report] = store.consolidate("ns", **FAST)
    assert report.status == "consolidated", report
    assert len(report.modules_created) == 2 and report.records_consolidated == 5
    assert report.capacity["calibrated"] and report.capacity["budget"] == cap
    mods = store.modules("ns")
    assert sorted(len(m.record_ids) for m in mods) == [2, 3]
    assert all(m.capacity_tokens == cap and m.knowledge_tokens <= cap for m in mods)
    owner = {rid: m.module_id for m in mods for rid in m.record_ids}
    assert set(owner) == set(ids)
    for r in store.get("ns", ids):
        assert r.metadata["module_id"] == owner[r.id]
    ans = store.ask("ns", "What is the code of box 4?", mode="lora", max_new_tokens=6)
    assert ans.modules == (owner[ids[4]],)  # routed to the module holding that record


def test_a_module_with_room_is_extended_and_a_full_one_is_not(store):
    cap = room_for(store, 0, 3)
    assert cap < room_for(store, 0, 4)
    store.update_config(consolidation={"capacity_tokens": {"16": cap}, "capacity_margin": 1.0})
    add_codes(store, 2)
    [first] = store.consolidate("ns", **FAST)
    add_codes(store, 2, start=2)
    [second] = store.consolidate("ns", **FAST)
    assert second.modules_replaced == first.modules_created  # 2 + 1 fits: extended
    assert len(second.modules_created) == 2  # the 4th record starts a new module
    assert sorted(len(m.record_ids) for m in store.modules("ns")) == [1, 3]
    assert store.count("ns", status="buffered") == 0


def scripted_drift(monkeypatch, values):
    """Drift readings in order (the real measurement is tested in test_drift_is_measured...)."""
    from lora_memory_plugin.consolidation import drift

    seen = []

    def fake(model, tokenizer, text=drift.CONTROL_TEXT):
        seen.append(model)
        d = values[len(seen) - 1]
        return {"ppl_base": 10.0, "ppl_lora": 10.0 * (1 + d), "drift": d}

    monkeypatch.setattr(drift, "measure_drift", fake)
    return seen


def test_drift_over_the_limit_retries_gentler_then_keeps_records_buffered(store, monkeypatch):
    add_codes(store, 3)
    seen = scripted_drift(monkeypatch, [0.5, 0.4])
    [report] = store.consolidate("ns", **{**FAST, "drift_max": 0.25})
    assert len(seen) == 2  # trained twice: the normal setting, then the gentler one
    assert report.status == "kept_buffered" and store.modules("ns") == []
    assert any("retrying gentler (lr=0.005)" in n for n in report.notes), report.notes
    assert any("after the gentler retry" in n for n in report.notes)
    assert report.drift == 0.4 and store.count("ns", status="buffered") == 3


def test_a_gentler_retry_within_the_limit_is_committed(store, monkeypatch):
    add_codes(store, 3)
    scripted_drift(monkeypatch, [0.5, 0.1])
    [report] = store.consolidate("ns", **{**FAST, "drift_max": 0.25})
    assert report.status == "consolidated", report.notes
    [module] = store.modules("ns")
    assert module.metrics["drift"] == 0.1 and module.metrics["lr"] == FAST["lr"] / 2


def test_drift_is_judged_during_training_and_the_weights_within_the_limit_are_kept(
    store, monkeypatch
):
    """The engine hands the trainer a drift guard at ``drift_max``: the guard's refusal stops
    training, the report says so, and the weights returned are measured again by the gate."""
    from lora_memory_plugin.consolidation import distill, drift

    limits = []

    class Refusing:
        def __init__(self, tokenizer, limit):
            limits.append(limit)
            self.readings = []

        def __call__(self, model):
            self.readings.append(0.4)
            return "drift +40.0% > 25%"

    monkeypatch.setattr(drift, "DriftGuard", Refusing)
    monkeypatch.setattr(distill, "distill", with_held_out)
    scripted_drift(monkeypatch, [0.1])
    add_codes(store, 3)
    [report] = store.consolidate("ns", **{**FAST, "drift_max": 0.25})
    assert limits == [0.25]
    [note] = [n for n in report.notes if n.startswith("training stopped at step")]
    assert note.endswith("drift +40.0% > 25%; no weights were evaluated before it"), note
    assert report.drift == 0.1  # measured again: no evaluation judged the weights returned


def with_held_out(records, gen, writer, system, **kw):
    """The QA records' own pairs, and one held-out phrasing: evaluations run in training."""
    from lora_memory_plugin.consolidation.data import Probe
    from lora_memory_plugin.consolidation.distill import DistillResult
    from lora_memory_plugin.consolidation.trainer import Example

    examples = [Example.qa(f"What is the code of box {i}?", str(1000 + 37 * i), system=system)
                for i in range(len(records))]  # fmt: skip
    probe = Probe("Which code opens box 0?", "1000", records[0].id, kind="held_out")
    return DistillResult(examples, [probe], stats={"held_out_probes": 1})


def test_the_drift_of_evaluated_weights_is_the_guards_reading_not_a_second_measure(
    store, monkeypatch
):
    """Weights that a held-out evaluation judged were measured by the guard right before it:
    that reading is the module's drift, and the control text is not read again."""
    from lora_memory_plugin.consolidation import distill, drift

    guards = []

    class Passing:
        def __init__(self, tokenizer, limit):
            self.readings = []
            guards.append(self)

        def __call__(self, model):
            self.readings.append(0.01 * (len(self.readings) + 1))
            return None

    monkeypatch.setattr(drift, "DriftGuard", Passing)
    monkeypatch.setattr(distill, "distill", with_held_out)
    measured = scripted_drift(monkeypatch, [0.2, 0.2])
    add_codes(store, 3)
    [report] = store.consolidate("ns", **{**FAST, "drift_max": 0.25})
    [guard] = guards
    assert measured == [], report.notes
    assert len(guard.readings) > 1 and report.drift in guard.readings


def test_drift_guard_reads_the_base_once_and_refuses_over_the_limit(sharp_model_dir, one_thread):
    from lora_memory_plugin.consolidation.drift import DriftGuard, measure_drift
    from lora_memory_plugin.consolidation.trainer import Example, TrainConfig, train_lora
    from lora_memory_plugin.generation.backend import Generator

    gen = Generator(str(sharp_model_dir))
    examples = [Example.text(code_text(i)) for i in range(4)]
    trained = train_lora(gen.path, examples, TrainConfig(max_steps=30, lr=5e-2))
    d = measure_drift(trained.model, gen.tokenizer)["drift"]
    assert abs(d) > 1e-3
    lenient, strict = DriftGuard(gen.tokenizer, d + 0.01), DriftGuard(gen.tokenizer, d - 0.01)
    assert lenient(trained.model) is None and lenient(trained.model) is None
    assert lenient.readings == [pytest.approx(d, rel=1e-4, abs=1e-6)] * 2
    assert strict(trained.model) == f"drift {d:+.1%} > {d - 0.01:.0%}"


def test_drift_is_measured_against_the_base_with_the_adapter_disabled(sharp_model_dir, one_thread):
    from lora_memory_plugin.consolidation.drift import measure_drift
    from lora_memory_plugin.consolidation.trainer import Example, TrainConfig, train_lora
    from lora_memory_plugin.generation.backend import Generator

    gen = Generator(str(sharp_model_dir))
    examples = [Example.text(code_text(i)) for i in range(4)]
    fresh = train_lora(gen.path, examples, TrainConfig(max_steps=1, lr=1e-12))
    d0 = measure_drift(fresh.model, gen.tokenizer)
    assert d0["drift"] == pytest.approx(0.0, abs=1e-4)  # LoRA B starts at zero
    trained = train_lora(gen.path, examples, TrainConfig(max_steps=30, lr=5e-2))
    d1 = measure_drift(trained.model, gen.tokenizer)
    assert d1["ppl_base"] == pytest.approx(d0["ppl_base"], rel=1e-4)
    assert abs(d1["drift"]) > 1e-3 and trained.model.training is False


def test_calibrate_measures_and_saves_capacity(store):
    store.update_config(consolidation={"lr": 1e-2})
    seen = []
    report = store.calibrate(
        [16], start_facts=2, max_facts=4, target=0.5, max_epochs=80, on_point=seen.append
    )
    assert seen == list(report.points) and report.points[0].facts == 2
    assert report.points[0].recall >= 0.5, report  # 2 facts fit even the tiny model
    passed = [p for p in report.points if p.recall >= 0.5]
    assert report.capacity_tokens == {16: passed[-1].tokens}
    assert store.config.consolidation.capacity_table() == {16: passed[-1].tokens}
    reopened = type(store).open(store.path)
    assert reopened.config.consolidation.capacity_table() == {16: passed[-1].tokens}
    with pytest.raises(InvalidInputError):
        store.calibrate([0])


def test_cli_calibrate_and_consolidate_options(store, capsys):
    import json

    from lora_memory_plugin.cli.main import main

    d = str(store.path)
    store.update_config(consolidation={"lr": 1e-2})
    args = ["--ranks", "16", "--start-facts", "2", "--max-facts", "2", "--target", "0.5"]
    args += ["--max-epochs", "80"]
    assert main(["calibrate", d, *args, "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["capacity_tokens"]["16"] > 0 and out["points"][0]["facts"] == 2
    assert type(store).open(d).config.consolidation.capacity_tokens == {}  # dry run: not saved
    assert main(["calibrate", d, *args]) == 0
    assert "r=16:" in capsys.readouterr().out
    assert type(store).open(d).config.consolidation.capacity_table()[16] > 0
    assert main(["calibrate", d, "--ranks", "x", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "InvalidInputError"

    add_codes(store, 2)
    flags = ["--mixture", "original", "--writer", "none", "--target", "0.5", "--max-steps", "300"]
    assert main(["consolidate", d, "-n", "ns", *flags]) == 0
    text = capsys.readouterr().out
    assert "'ns': consolidated, 2 record(s) in, 2 consolidated into 1 module(s)" in text
    assert "probe recall" in text and "drift" in text
    assert main(["consolidate", d, "-n", "ns", "--mixture", "poetry"]) == 1
    assert "unknown strategy" in capsys.readouterr().err
