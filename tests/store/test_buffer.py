"""The buffer contract, run against embedded Chroma and a real `chroma run` server."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from lora_memory_plugin import (
    InvalidInputError,
    InvalidTypeError,
    LoraMemoryError,
    RecordNotFoundError,
    TextTooLargeError,
    UnknownNamespaceError,
)

pytestmark = pytest.mark.timeout(300)


def test_add_turn_is_searchable_at_once_with_metadata(store):
    rid = store.add_turn("user-42", "My locker code is 4471.", role="user", session_id="s1")
    store.add_turn("user-42", "I like green tea.", role="user", session_id="s1")
    hits = store.search("user-42", "what is the locker code", k=2)
    assert hits[0].id == rid
    assert hits[0].text == "My locker code is 4471."
    assert hits[0].score > hits[1].score
    meta = hits[0].metadata
    assert meta["kind"] == "turn" and meta["role"] == "user" and meta["session_id"] == "s1"
    assert meta["status"] == "buffered" and meta["module_id"] == ""
    assert len(meta["content_hash"]) == 64
    assert abs(meta["created_at"] - time.time()) < 120


def test_duplicate_content_is_stored_once(store):
    a = store.add_turn("ns", "Same fact.", role="user")
    b = store.add_turn("ns", "Same fact.", role="user", session_id="other")
    c = store.add_turn("ns", "Same fact.", role="assistant")
    assert a == b != c
    assert store.count("ns") == 2
    ids = store.add_turns("ns", [{"content": "x1"}, {"content": "x1"}, {"content": "x2"}])
    assert ids[0] == ids[1] != ids[2]
    assert store.count("ns") == 4


def test_add_document_chunks_with_overlap_and_order(store):
    sentences = [f"Fact number {i}: the code of room {i} is {1000 + i}." for i in range(120)]
    text = " ".join(sentences)
    ids = store.add_document("docs", text, source="rooms.md")
    assert len(ids) > 3
    recs = store.get("docs", ids)
    assert [r.metadata["chunk_index"] for r in recs] == list(range(len(ids)))
    assert all(
        r.metadata["source"] == "rooms.md" and r.metadata["kind"] == "document" for r in recs
    )
    for a, b in itertools.pairwise(recs):  # neighbours overlap: b starts inside a
        assert b.text[:20] in a.text
    joined = " ".join(r.text for r in recs)
    for s in sentences:
        assert s in joined
    hit = store.search("docs", "code of room 77", k=3)
    assert any("room 77 is 1077" in h.text for h in hit)


def test_search_filters(store):
    t0 = time.time()
    store.add_turn("ns", "Alice lives in Paris.", session_id="a", created_at=t0 - 100)
    store.add_turn("ns", "Bob lives in Rome.", session_id="b", role="assistant", created_at=t0)
    store.add_document("ns", "Carol lives in Oslo.", source="c.txt")
    assert {h.text for h in store.search("ns", "lives", k=5, kind="turn")} == {
        "Alice lives in Paris.",
        "Bob lives in Rome.",
    }
    assert [h.text for h in store.search("ns", "lives", k=5, session_id="b")] == [
        "Bob lives in Rome."
    ]
    assert [h.text for h in store.search("ns", "lives", k=5, role="assistant")] == [
        "Bob lives in Rome."
    ]
    assert [h.text for h in store.search("ns", "lives", k=5, kind="document")] == [
        "Carol lives in Oslo."
    ]
    old = store.search("ns", "lives", k=5, until=t0 - 50)
    assert [h.text for h in old] == ["Alice lives in Paris."]
    assert len(store.search("ns", "lives", k=5, since=t0 - 50)) == 2
    assert store.count("ns", kind="turn") == 2
    assert store.count("ns", status="buffered") == 3
    assert len(store.search("ns", "lives", k=50)) == 3  # k above the count is fine


def test_get_and_count(store):
    ids = store.add_turns("ns", [{"content": f"fact {i}"} for i in range(5)])
    assert store.count("ns") == 5
    assert [r.id for r in store.get("ns", ids[::-1])] == ids[::-1]
    assert len(store.get("ns", limit=2)) == 2
    with pytest.raises(RecordNotFoundError):
        store.get("ns", ["t-nope"])
    with pytest.raises(KeyError):  # RecordNotFoundError is also a KeyError
        store.get("ns", ["t-nope"])


def test_namespaces_are_isolated_and_any_string_works(store):
    names = ["user-42", "User-42", "../../etc", "a/b\\c", "名前", "nul\x00byte", "x" * 3000, " "]
    for i, ns in enumerate(names):
        store.add_turn(ns, f"secret number {i}")
    assert sorted(store.namespaces()) == sorted(names)
    for i, ns in enumerate(names):
        hits = store.search(ns, "secret number", k=20)
        assert [h.text for h in hits] == [f"secret number {i}"]
    # nothing was written outside the store directory
    for p in store.path.rglob("*"):
        assert store.path in p.resolve().parents or p.resolve() == store.path


def test_unknown_namespace_is_a_typed_error(store):
    store.add_turn("known", "hello there")
    for call in (
        lambda: store.search("unknown", "q"),
        lambda: store.get("unknown"),
        lambda: store.count("unknown"),
    ):
        with pytest.raises(UnknownNamespaceError) as ei:
            call()
        assert "unknown" in str(ei.value) and isinstance(ei.value, KeyError)


@pytest.mark.parametrize(
    ("call", "err"),
    [
        (lambda m: m.add_turn("ns", ""), InvalidInputError),
        (lambda m: m.add_turn("ns", "   \n\t"), InvalidInputError),
        (lambda m: m.add_turn("ns", None), InvalidTypeError),
        (lambda m: m.add_turn("ns", b"bytes"), InvalidTypeError),
        (lambda m: m.add_turn("ns", 42), InvalidTypeError),
        (lambda m: m.add_turn("ns", "x" * 3_000_000), TextTooLargeError),
        (lambda m: m.add_turn("ns", "ok", role="wizard"), InvalidInputError),
        (lambda m: m.add_turn("ns", "ok", metadata={"kind": "x"}), InvalidInputError),
        (lambda m: m.add_turn("ns", "ok", metadata={"a": [1]}), InvalidInputError),
        (lambda m: m.add_turn("ns", "bad \ud800 surrogate"), InvalidInputError),
        (lambda m: m.add_turn("", "ok"), InvalidInputError),
        (lambda m: m.add_turn(None, "ok"), InvalidTypeError),
        (lambda m: m.add_document("ns", "x" * 9_000_000), TextTooLargeError),
        (lambda m: m.add_document("ns", ""), InvalidInputError),
        (lambda m: m.add_turns("ns", [{"content": "ok"}, {"content": ""}]), InvalidInputError),
        (lambda m: m.add_turns("ns", [{"text": "wrong key"}]), InvalidInputError),
        (lambda m: m.search("ns", "q", k=0), InvalidInputError),
        (lambda m: m.search("ns", "q", k=-3), InvalidInputError),
        (lambda m: m.search("ns", "q", k=10**9), InvalidInputError),
        (lambda m: m.search("ns", "q", k="5"), InvalidTypeError),
        (lambda m: m.search("ns", "q", k=True), InvalidTypeError),
        (lambda m: m.search("ns", ""), InvalidInputError),
        (lambda m: m.search("ns", "q", kind="memo"), InvalidInputError),
        (lambda m: m.search("ns", "q", since=10, until=5), InvalidInputError),
        (lambda m: m.ask("ns", "q", mode="telepathy"), InvalidInputError),
    ],
)
def test_bad_input_raises_typed_error_and_loses_nothing(store, call, err):
    keep = store.add_turns("ns", [{"content": f"precious fact {i}"} for i in range(3)])
    with pytest.raises(err) as ei:
        call(store)
    assert isinstance(ei.value, LoraMemoryError)
    assert str(ei.value)  # a message that says what to do
    assert store.count("ns") == 3
    assert [r.text for r in store.get("ns", keep)] == [f"precious fact {i}" for i in range(3)]


def test_status_counts(store):
    store.add_turns("a", [{"content": "one"}, {"content": "two"}])
    store.add_document("b", "A short document.", source="d.md")
    st = store.status()
    by = {n.namespace: n for n in st.namespaces}
    assert by["a"].records == 2 and by["a"].turns == 2 and by["a"].buffered == 2
    assert by["b"].documents == 1
    assert st.records == 3
    assert st.to_dict()["records"] == 3


def test_reopen_keeps_records(store, backend):
    from lora_memory_plugin import LoRAMemory

    store.add_turn("ns", "durable fact")
    again = LoRAMemory.open(store.path)
    assert again.chroma_url == store.chroma_url
    assert [h.text for h in again.search("ns", "durable", k=1)] == ["durable fact"]


async def test_async_twins(store):
    rid = await store.aadd_turn("ns", "async fact", role="user")
    ids = await store.aadd_document("ns", "An async document.")
    hits = await store.asearch("ns", "async", k=5)
    assert {h.id for h in hits} == {rid, *ids}
    assert await store.acount("ns") == 2
    got = await asyncio.gather(*(store.asearch("ns", "fact", k=1) for _ in range(4)))
    assert all(g[0].id == rid for g in got)


def test_collections_persist_their_index_often_and_old_ones_are_moved(store):
    """A small HNSW sync threshold keeps the log a reopening process must replay short."""
    from lora_memory_plugin.store.buffer import NS_META_KEY, ROLE_BUFFER, ROLE_META_KEY
    from lora_memory_plugin.store.client import HNSW_CONFIG
    from lora_memory_plugin.store.namespaces import encode_namespace, pack_namespace

    store.add_turn("new", "a fact")
    client = store.buffer.provider.client()
    col = client.get_collection(encode_namespace("new"))
    assert col.configuration["hnsw"]["sync_threshold"] == HNSW_CONFIG["sync_threshold"] == 100
    assert col.configuration["hnsw"]["space"] == "cosine"

    # a namespace written by an older version: Chroma's default threshold (1,000)
    client.create_collection(
        encode_namespace("old"),
        metadata={NS_META_KEY: pack_namespace("old"), ROLE_META_KEY: ROLE_BUFFER},
        configuration={"hnsw": {"space": "cosine"}},
        embedding_function=None,
    )
    assert (
        client.get_collection(encode_namespace("old")).configuration["hnsw"]["sync_threshold"]
        == 1000
    )
    store.add_turn("old", "written after the upgrade")
    old = store.buffer.provider.client().get_collection(encode_namespace("old"))
    assert old.configuration["hnsw"]["sync_threshold"] == 100
    assert [h.text for h in store.search("old", "upgrade", k=1)] == ["written after the upgrade"]


def test_server_and_embedded_stores_in_one_process_stay_apart(tmp_path, chroma_server):
    """Each client gets its own Chroma settings object: the clients write into the one they are
    given (HttpClient its API and host, PersistentClient its path), so a shared object once sent
    an embedded store's reads to the server a store opened earlier had used."""
    from lora_memory_plugin import LoRAMemory

    served = LoRAMemory.open(tmp_path / "s", chroma_url=chroma_server, chroma_database="apart")
    served.add_turn("ns", "only on the server")
    local = LoRAMemory.open(tmp_path / "e")
    local.add_turn("ns", "only in the embedded store")
    assert [h.text for h in local.search("ns", "only", k=5)] == ["only in the embedded store"]
    assert [h.text for h in served.search("ns", "only", k=5)] == ["only on the server"]
    assert local.chroma_url == "" and (tmp_path / "e" / "chroma").is_dir()
