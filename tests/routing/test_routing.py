"""Routing on real stores: several modules per namespace, the router, recall, mixed batches."""

from __future__ import annotations

import json

import pytest

from lora_memory_plugin import InvalidInputError, LoRAMemory
from lora_memory_plugin.cli.main import main
from lora_memory_plugin.registry import modules as registry
from lora_memory_plugin.routing import KeyHit, route

FACTS = [
    (f"What is the code of box {i}?", code)
    for i, code in enumerate(["4471", "9302", "1185", "7720"])
]
OTHER = [("What is the colour of door 7?", "green"), ("What is the colour of door 9?", "ochre")]
FAST = {"lr": 1e-2, "rank": 16, "max_steps": 400}


def consolidate_in_modules(mem: LoRAMemory, ns: str, facts, tokens_per_module: int = 60):
    """Add ``facts`` and consolidate them into several small modules (capacity forced low)."""
    ids = mem.add_turns(ns, [{"content": f"Question: {q} Answer: {a}"} for q, a in facts])
    mem.update_config(consolidation={"capacity_tokens": {"16": tokens_per_module}})
    [report] = mem.consolidate(ns, **FAST)
    assert report.status == "consolidated", report
    return ids, report


@pytest.fixture(scope="module")
def routed(tmp_path_factory, sharp_model_dir):
    """One store for the module (training is the slow part): 'ns' with 4 facts in 2 modules,
    'other' with 2 facts in 1 module, 'plain' with no module. Tests that change the config
    restore it; the test that removes a module runs last."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mem = LoRAMemory.open(
        tmp_path_factory.mktemp("routed") / "store", base_model=str(sharp_model_dir)
    )
    ids, report = consolidate_in_modules(mem, "ns", FACTS)
    assert len(report.modules_created) == 2
    consolidate_in_modules(mem, "other", OTHER, tokens_per_module=10_000)
    mem.add_turn("plain", "The cafeteria opens at 8.", role="user")  # no modules: rag rows
    owner = {r.id: r.metadata["module_id"] for r in mem.get("ns", ids)}
    yield mem, [owner[i] for i in ids]
    torch.set_num_threads(threads)


@pytest.fixture
def routing_config(routed):
    mem, _ = routed
    yield mem
    mem.update_config(routing={"split_below": 0.6, "max_resident": 32})


def test_questions_reach_the_module_that_holds_their_record(routed):
    mem, owners = routed
    assert len(set(owners)) == 2
    for (q, a), module_id in zip(FACTS, owners, strict=True):
        decision = mem.route("ns", q)
        assert decision.chosen == (module_id,)
        assert decision.candidates[0].score > 0.9 and decision.confidence > 0.6
        assert sum(c.share for c in decision.candidates) == pytest.approx(1.0)
        assert decision.confidence <= decision.candidates[0].score
        ans = mem.ask("ns", q, mode="lora", max_new_tokens=6)
        assert ans.mode == "lora" and ans.modules == (module_id,) and a in ans.text
        assert ans.route is not None and ans.route["chosen"] == [module_id]
        assert ans.confidence == pytest.approx(decision.confidence)


def test_unrelated_question_routes_nowhere_and_falls_back_to_rag(routed):
    mem, _ = routed
    decision = mem.route("ns", "Will it rain in Paris tomorrow afternoon?")
    assert decision.chosen == () and "min_score" in decision.reason
    rec = mem.recall("ns", "Will it rain in Paris tomorrow afternoon?")
    assert rec.text == "" and rec.modules == () and rec.confidence == 0.0 and rec.reason
    ans = mem.ask("ns", "Will it rain in Paris tomorrow afternoon?", mode="lora")
    assert ans.mode == "rag" and ans.modules == ()
    assert any("no module matched" in n for n in ans.notes)


def test_recall_answers_from_the_routed_module_without_context(routed):
    mem, owners = routed
    rec = mem.recall("ns", FACTS[3][0], max_new_tokens=6)
    assert rec.modules == (owners[3],) and FACTS[3][1] in rec.text and rec.confidence > 0.6


async def test_async_recall_and_route(routed):
    mem, owners = routed
    rec = await mem.arecall("ns", FACTS[0][0], max_new_tokens=6)
    assert rec.modules == (owners[0],)
    decision = await mem.aroute("ns", FACTS[1][0])
    assert decision.chosen == (owners[1],)


def test_ask_many_mixed_batch_matches_one_at_a_time(routed, routing_config, monkeypatch):
    from lora_memory_plugin.generation import multilora

    mem, _ = routed
    items = [("ns", q) for q, _ in FACTS] + [("other", q) for q, _ in OTHER]
    items.append(("plain", "When does the cafeteria open?"))
    single = [mem.ask(ns, q, mode="lora", max_new_tokens=6) for ns, q in items]
    stacked = []
    real = multilora.stacked_lora
    monkeypatch.setattr(
        multilora,
        "stacked_lora",
        lambda m, layers, names: stacked.append(names) or real(m, layers, names),
    )
    batch = mem.ask_many(
        [n for n, _ in items], [q for _, q in items], mode="lora", max_new_tokens=6
    )
    assert [a.text for a in batch] == [a.text for a in single]
    assert [a.modules for a in batch] == [a.modules for a in single]
    assert len({a.modules for a in batch if a.modules}) == 3  # three modules in one batch
    assert batch[-1].mode == "rag" and batch[-1].modules == ()
    assert len(stacked) == 1 and len(set(stacked[0])) == 4  # 3 modules + base rows, one pass
    gen = mem.generator()
    monkeypatch.setattr(gen, "mixed_batch", "peft")  # peft's own loop: the same answers
    looped = mem.ask_many(
        [n for n, _ in items], [q for _, q in items], mode="lora", max_new_tokens=6
    )
    assert [a.text for a in looped] == [a.text for a in single] and len(stacked) == 1
    mem.update_config(routing={"max_resident": 1})  # batches split so one module is loaded
    small = mem.ask_many(
        [n for n, _ in items], [q for _, q in items], mode="lora", max_new_tokens=6
    )
    assert [a.text for a in small] == [a.text for a in single]
    assert len(mem.generator().resident_adapters) == 1
    with pytest.raises(InvalidInputError, match="one per question"):
        mem.ask_many(["ns"], ["a", "b"], mode="lora")


def test_chat_routes_the_last_user_message(routed):
    mem, owners = routed
    conv = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": FACTS[2][0]},
    ]
    ans = mem.chat("ns", conv, max_new_tokens=6)
    assert ans.mode == "lora" and ans.modules == (owners[2],) and ans.confidence > 0.6
    base = mem.chat("ns", conv, mode="base", max_new_tokens=6)
    assert base.mode == "base" and base.modules == () and base.route is None
    unknown = mem.chat("nobody", conv, max_new_tokens=6)
    assert unknown.mode == "base" and unknown.notes
    with pytest.raises(InvalidInputError, match="role"):
        mem.chat("ns", [{"role": "tool", "content": "x"}])
    with pytest.raises(InvalidInputError, match="lora' or 'base"):
        mem.chat("ns", conv, mode="rag")


def test_routing_never_crosses_namespaces(routed):
    mem, owners = routed
    [theirs] = mem.modules("other")
    for q, _ in FACTS:  # ns's own questions asked in 'other' can only reach 'other' modules
        d = mem.route("other", q)
        assert {c.module_id for c in d.candidates} <= {theirs.module_id}
    d = mem.route("ns", OTHER[0][0])
    assert {c.module_id for c in d.candidates} <= set(owners)


def test_split_confidence_puts_competing_records_in_context(routed, routing_config):
    mem, owners = routed
    mem.update_config(routing={"split_below": 1.0})  # any second candidate counts as a split
    ans = mem.ask("ns", FACTS[1][0], mode="lora", max_new_tokens=6)
    assert ans.mode == "hybrid" and ans.requested_mode == "lora"
    assert any("routing split" in n for n in ans.notes)
    assert ans.sources and {h.metadata["module_id"] for h in ans.sources} <= set(owners)


def test_cli_explain_shows_the_routing_decision(routed, capsys):
    mem, owners = routed
    argv = ["ask", str(mem.path), "-n", "ns", FACTS[2][0], "--mode", "lora", "--explain"]
    assert main([*argv, "--max-new-tokens", "6"]) == 0
    err = capsys.readouterr().err
    assert f"-- route: {owners[2]}" in err and "confidence" in err
    assert main([*argv, "--max-new-tokens", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["route"]["chosen"] == [owners[2]] and out["route"]["keys"]
    assert main(["modules", str(mem.path), "-n", "ns", "--explain", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["modules"]
    assert [r["routing_keys"] for r in rows] == [4, 4] and rows[0]["probe_questions"]


def test_cli_answers_a_questions_file_in_batches(routed, tmp_path, capsys):
    mem, owners = routed
    f = tmp_path / "qs.txt"
    f.write_text("\n".join(q for q, _ in FACTS) + "\n\n", encoding="utf-8")
    argv = ["ask-many", str(mem.path), "-n", "ns", str(f), "--mode", "lora"]
    assert main([*argv, "--max-new-tokens", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["answers"]
    assert [r["question"] for r in rows] == [q for q, _ in FACTS]
    assert [r["modules"] for r in rows] == [[o] for o in owners]
    assert all(a in r["text"] for r, (_, a) in zip(rows, FACTS, strict=True))
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    assert main(["ask-many", str(mem.path), "-n", "ns", str(tmp_path / "empty.txt")]) == 1
    assert "no question" in capsys.readouterr().err


def test_index_is_rebuilt_from_the_registry(routed):  # last: removes a module
    mem, owners = routed
    mem.routing.drop("ns")  # e.g. lost, or a module committed by a run killed before indexing
    assert mem.route("ns", FACTS[2][0]).chosen == (owners[2],)
    counts = mem.routing.count("ns")
    assert set(counts) == set(owners) and all(n == 4 for n in counts.values())  # 2 records + 2 qs
    gone = owners[0]
    registry.remove_module(mem.path, "ns", gone)
    d = mem.route("ns", FACTS[0][0])
    assert gone not in {c.module_id for c in d.candidates}
    assert set(mem.routing.count("ns")) == {owners[2]}


class _Keys:
    """A routing index answering fixed key hits: the scoring rule on exact numbers."""

    def __init__(self, hits):
        self.hits = hits

    def query(self, namespace, text, k):
        return self.hits[:k]


def _decide(hits, **kw):
    opts = {"top_k": 16, "min_score": 0.35, "temperature": 0.05, "split_below": 0.6} | kw
    live = {h.module_id for h in hits}
    return route(_Keys(hits), "ns", "q", live, **opts)


def test_scoring_max_similarity_softmax_and_threshold():
    far = _decide([KeyHit("a", "question", "x", 0.9), KeyHit("b", "record", "y", 0.5)])
    assert far.chosen == ("a",) and far.candidates[0].share > 0.99 and not far.split
    # many near-misses of a big module do not outvote a small module's exact match
    crowd = [KeyHit("big", "record", str(i), 0.7) for i in range(8)]
    exact = _decide([KeyHit("small", "question", "q", 0.95), *crowd])
    assert exact.chosen == ("small",) and exact.candidates[1].votes == 8
    close = _decide([KeyHit("a", "record", "x", 0.90), KeyHit("b", "record", "y", 0.89)])
    assert close.split and close.candidates[0].share == pytest.approx(0.55, abs=0.01)
    assert close.confidence == pytest.approx(0.55 * 0.90, abs=0.01)  # share x best-key score
    loose = _decide([KeyHit("a", "record", "x", 0.5)])  # one module, matched loosely
    assert loose.chosen == ("a",) and loose.confidence == pytest.approx(0.5)
    low = _decide([KeyHit("a", "record", "x", 0.2)])
    assert low.chosen == () and low.confidence == 0.0 and low.candidates
    stale = route(
        _Keys([KeyHit("gone", "record", "x", 0.99)]),
        "ns",
        "q",
        {"a"},
        top_k=4,
        min_score=0.35,
        temperature=0.05,
        split_below=0.6,
    )
    assert stale.chosen == () and "no routing keys" in stale.reason
