"""Item 4: namespaces never leak into each other, on disk or in results.

20 namespaces with hostile names (``../``, NUL, slashes, Unicode, a lone surrogate, 4096-char
names, names equal up to case or punctuation); two hold LoRA modules trained on the *same*
questions with different answers. Random ``search`` / ``route`` / ``ask`` calls must return only
the queried namespace's records, keys and modules. Full counts (10k queries):
``python -m lora_memory_plugin.bench.reliability --part isolation``.
"""

from __future__ import annotations

import pytest

from lora_memory_plugin.bench.reliability.isolation import (
    HOSTILE_NAMESPACES,
    build_isolation_store,
    run_isolation,
)
from lora_memory_plugin.store.namespaces import encode_namespace

pytestmark = pytest.mark.timeout(300)

QUERIES = 200


@pytest.fixture
def backend() -> str:
    return "embedded"  # the on-disk checks need the store's own directory


def test_random_queries_never_cross_namespaces(make_store, sharp_model_dir, one_thread, tmp_path):
    mem = make_store(base_model=str(sharp_model_dir))
    built = build_isolation_store(mem, records=6, with_modules=2)
    assert all(built["modules"][ns] for ns in HOSTILE_NAMESPACES[:2])
    res = run_isolation(mem, built, queries=QUERIES, ask_share=0.1, seed=1, parent=tmp_path)
    assert res["leaks"] == [] and res["cross_namespace_results"] == 0, res
    assert res["store_problems"] == [] and res["disk"]["problems"] == [], res
    assert res["by_op"]["ask"] > 10 and res["by_op"]["route"] > 50
    assert res["results_checked"]["search_hits"] > QUERIES  # the checks saw real results
    assert res["results_checked"]["route_candidates"] > 0
    assert res["results_checked"]["ask_with_module"] > 0


def test_hostile_names_encode_to_distinct_safe_identifiers():
    names = HOSTILE_NAMESPACES
    encoded = [encode_namespace(ns) for ns in names]
    assert len(set(encoded)) == len(names)
    for e in encoded:
        assert e.startswith("lm-") and len(e) <= 120
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in e), e


@pytest.mark.parametrize("ns", ["a\ud800\udfffb", "\udbff\udc00", "\ud83d\ude42 ns"])
def test_namespace_with_adjacent_lone_surrogates_is_listed_as_written(store, ns):
    """Found by the fuzzer: JSON read '\\ud800\\udfff' back as one astral character, so
    namespaces() listed a name that get() then did not know."""
    store.add_turn(ns, "x")
    assert ns in store.namespaces()
    assert [r.text for r in store.get(ns)] == ["x"]
