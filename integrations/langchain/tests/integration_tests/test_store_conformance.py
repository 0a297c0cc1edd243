"""The same operation sequences against LangGraph's InMemoryStore and LoRAMemoryStore.

Both embed with the same MiniLM, so scores are comparable, but semantic ranking may still
differ (Chroma's HNSW vs brute force, one text per item vs one vector per field): query results
are compared as sets over all pages. Contents, keys, namespaces and deletions must match.

One reference quirk is normalised: InMemoryStore keeps listing a namespace once it was touched
(a defaultdict entry, even by a get of a missing key, or after its last item is deleted); our
store, like LangGraph's Postgres store, lists the namespaces that hold items.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_lora_memory import LoRAMemoryStore
from langgraph.store.base import (
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from lora_memory_plugin.store.embedder import MiniLMEmbeddingFunction


@pytest.fixture
def stores(memory: Any) -> tuple[InMemoryStore, LoRAMemoryStore]:
    # the store's embedder: the default MiniLM (through a service, the same one runs there)
    embedder = getattr(memory, "embedder", None) or MiniLMEmbeddingFunction()

    def embed(texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in embedder.embed(texts)]

    ref = InMemoryStore(index={"dims": 384, "embed": embed, "fields": ["$"]})
    return ref, LoRAMemoryStore(memory=memory)


def _norm(result: Any, ref: InMemoryStore | None = None, *, unordered: bool = False) -> Any:
    if result is None:
        return None
    if isinstance(result, Item):
        return (result.namespace, result.key, result.value)
    if isinstance(result, list) and all(isinstance(r, Item) for r in result):
        rows = [(r.namespace, r.key, r.value) for r in result]
        return sorted(rows, key=repr) if unordered else rows
    if isinstance(result, list):  # namespaces
        if ref is not None:  # only namespaces that hold items (see the module docstring)
            result = [ns for ns in result if _holds_items(ref, ns)]
        return result
    raise AssertionError(f"unexpected result {result!r}")


def _holds_items(ref: InMemoryStore, prefix: tuple[str, ...]) -> bool:
    return bool(ref.search(prefix, limit=1))


def run_both(
    stores: tuple[InMemoryStore, LoRAMemoryStore], ops: list[Op], *, unordered: bool = False
) -> list[Any]:
    ref, ours = stores
    expected = ref.batch(ops)
    got = ours.batch(ops)
    assert len(got) == len(expected)
    out = []
    for op, e, g in zip(ops, expected, got, strict=True):
        loose = unordered or (isinstance(op, SearchOp) and op.query is not None)
        ne = _norm(e, ref if isinstance(op, ListNamespacesOp) else None, unordered=loose)
        ng = _norm(g, unordered=loose)
        assert ng == ne, f"{op}: ours {ng} != reference {ne}"
        out.append(g)
    return out


NS = ("memories", "user-42")


def test_put_get_update_delete(stores: Any) -> None:
    run_both(stores, [PutOp(NS, "a", {"content": "Locker code is 4471."})])
    run_both(stores, [GetOp(NS, "a"), GetOp(NS, "missing"), GetOp(("other",), "a")])
    run_both(stores, [PutOp(NS, "a", {"content": "Locker code is 9302.", "n": 2})])
    [item] = run_both(stores, [GetOp(NS, "a")])
    assert item.value == {"content": "Locker code is 9302.", "n": 2}
    assert item.created_at <= item.updated_at
    run_both(stores, [PutOp(NS, "a", None), PutOp(NS, "never-there", None)])
    run_both(stores, [GetOp(NS, "a"), SearchOp(NS), ListNamespacesOp()])
    ours = stores[1]
    assert ours.memory.count("memories/user-42") == 0  # the record left the buffer


def test_reads_in_a_batch_see_the_state_before_its_puts_and_last_put_wins(stores: Any) -> None:
    run_both(
        stores,
        [
            PutOp(NS, "k", {"v": 1}),
            GetOp(NS, "k"),
            PutOp(NS, "k", {"v": 2}),
            SearchOp(NS),
            PutOp(NS, "j", {"v": 3}),
        ],
    )
    run_both(stores, [GetOp(NS, "k"), GetOp(NS, "j"), SearchOp(NS)])


def test_identical_values_under_different_keys_and_namespaces(stores: Any) -> None:
    same = {"content": "The wifi password changes every Monday."}
    # One put per batch: InMemoryStore itself fails on one text put twice in a batch
    # ("Number of embeddings (1) does not match number of indices (4)").
    for ns, key in [(NS, "k0"), (NS, "k1"), (NS, "k2"), (("memories", "user-7"), "k0")]:
        run_both(stores, [PutOp(ns, key, same)])
    run_both(stores, [GetOp(NS, "k0"), GetOp(NS, "k1"), GetOp(NS, "k2"), SearchOp(("memories",))])
    run_both(stores, [PutOp(NS, "k1", None)])
    run_both(stores, [GetOp(NS, "k0"), GetOp(NS, "k1"), GetOp(NS, "k2"), SearchOp(("memories",))])
    run_both(stores, [PutOp(NS, "k0", {"content": "Changed."})])
    run_both(stores, [PutOp(NS, "k2", same)])
    run_both(stores, [SearchOp(("memories",), limit=20)], unordered=True)


def test_namespaces_prefix_suffix_wildcard_depth_and_paging(stores: Any) -> None:
    nss = [
        ("users", "u1", "notes"),
        ("users", "u1", "prefs"),
        ("users", "u2", "notes"),
        ("teams", "t1"),
        ("users",),
    ]
    run_both(stores, [PutOp(ns, "k", {"ns": "/".join(ns)}) for ns in nss])
    run_both(
        stores,
        [
            ListNamespacesOp(),
            ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("users",)),)),
            ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("notes",)),)),
            ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("users", "*", "notes")),)),
            ListNamespacesOp(max_depth=2),
            ListNamespacesOp(limit=2, offset=1),
        ],
    )
    run_both(
        stores,
        [SearchOp(("users",), limit=10), SearchOp(("users", "u1")), SearchOp(("nobody",))],
        unordered=True,
    )


def test_filters(stores: Any) -> None:
    items = [
        {"kind": "fact", "n": 1, "who": {"name": "Dana"}},
        {"kind": "fact", "n": 5, "who": {"name": "Lee"}},
        {"kind": "pref", "n": 9, "tags": ["a", "b"]},
    ]
    run_both(stores, [PutOp(NS, f"i{i}", v) for i, v in enumerate(items)])
    run_both(
        stores,
        [
            SearchOp(NS, filter={"kind": "fact"}),
            SearchOp(NS, filter={"n": {"$gt": 1}}),
            SearchOp(NS, filter={"n": {"$gte": 1, "$lt": 9}}),
            SearchOp(NS, filter={"kind": {"$ne": "fact"}}),
            SearchOp(NS, filter={"who": {"name": "Lee"}}),
            SearchOp(NS, filter={"tags": ["a", "b"]}),
            SearchOp(NS, filter={"kind": "fact"}, limit=1, offset=1),
        ],
    )


def test_semantic_search_pages_cover_the_same_items(stores: Any) -> None:
    facts = [
        "My locker code is 4471.",
        "I moved to Lyon last spring.",
        "My sister is called Alice.",
        "I am allergic to peanuts.",
        "The office opens at 8:00.",
    ]
    run_both(stores, [PutOp(NS, f"f{i}", {"content": t}) for i, t in enumerate(facts)])
    pages = [SearchOp(NS, query="Where do I live?", limit=2, offset=o) for o in (0, 2, 4)]
    ref, ours = stores
    got = [r for res in ours.batch(pages) for r in res]
    expected = [r for res in ref.batch(pages) for r in res]
    assert (
        sorted(r.key for r in got) == sorted(r.key for r in expected) == [f"f{i}" for i in range(5)]
    )
    assert all(isinstance(r.score, float) for r in got)
    assert [r.score for r in got] == sorted((r.score for r in got), reverse=True)
    assert got[0].key == "f1"  # the Lyon fact
    run_both(stores, [SearchOp(NS, query="peanuts", filter={"content": facts[3]})])


def test_index_false_and_index_fields(stores: Any) -> None:
    run_both(
        stores,
        [
            PutOp(NS, "plain", {"content": "Ranked by meaning.", "x": 1}),
            PutOp(NS, "hidden", {"content": "Not indexed."}, index=False),
            PutOp(NS, "field", {"title": "Lyon", "body": "ignored"}, index=["title"]),
        ],
    )
    ref, ours = stores
    op = SearchOp(NS, query="meaning", limit=10)
    [got], [expected] = ours.batch([op]), ref.batch([op])
    assert {r.key for r in got} == {r.key for r in expected}
    scores = {r.key: r.score for r in got}
    assert scores["hidden"] is None and scores["plain"] is not None
    assert got[-1].key == "hidden"  # unindexed items come after the ranked ones
    rec = ours.memory.search("memories/user-42", "Lyon", k=1)[0]
    assert rec.text == "Lyon"  # the record text is the indexed field


def test_large_values_round_trip(stores: Any) -> None:
    big = {"content": "x" * 10_000, "list": list(range(500))}
    run_both(stores, [PutOp(NS, "big", big, index=False)])
    run_both(stores, [GetOp(NS, "big")])


async def test_abatch_matches(stores: Any) -> None:
    ref, ours = stores
    ops: list[Op] = [PutOp(NS, "a", {"content": "async"}), PutOp(("x",), "b", {"v": 1})]
    assert await ours.abatch(ops) == await ref.abatch(ops)
    reads: list[Op] = [GetOp(NS, "a"), SearchOp(("x",)), ListNamespacesOp()]
    got, expected = await ours.abatch(reads), await ref.abatch(reads)
    assert [_norm(r) for r in got] == [_norm(r) for r in expected]


def test_high_level_api_and_namespace_validation(stores: Any) -> None:
    ref, ours = stores
    for s in (ref, ours):
        s.put(NS, "k", {"content": "hello"})
        s.delete(NS, "k")
        s.put(NS, "k2", {"content": "again"})
    assert _norm(ours.get(NS, "k2")) == _norm(ref.get(NS, "k2"))
    assert ours.get(NS, "k") is None
    assert ours.list_namespaces() == ref.list_namespaces()
    with pytest.raises(ValueError):
        ours.batch([PutOp(("bad.label",), "k", {"v": 1})])
    with pytest.raises(NotImplementedError):
        ours.put(NS, "k3", {"v": 1}, ttl=5)
