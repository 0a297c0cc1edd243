"""The memory service (``lora-memory serve``) against real clients on 127.0.0.1: RemoteMemory
(httpx, sync and async) and raw HTTP, over a store answering with the tiny model."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from lora_memory_plugin import (
    AuthenticationError,
    ConfigError,
    InvalidInputError,
    LoRAMemory,
    PermissionDeniedError,
    RecordNotFoundError,
    TextTooLargeError,
)
from lora_memory_plugin.cli.main import main
from lora_memory_plugin.remote import RemoteMemory
from lora_memory_plugin.service.app import PUBLIC_PATHS, create_app, routes_needing_a_key
from lora_memory_plugin.service.keys import ENV_KEYS, KeyRing, hash_key
from lora_memory_plugin.service.server import check_auth_setting
from lora_memory_plugin.testing import serve_in_thread
from lora_memory_plugin.types import Answer, ForgetReport, Hit, Recall, Record, StoreStatus

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    root = tmp_path_factory.mktemp("service")
    mem = LoRAMemory.open(root / "store", base_model=str(tiny_model_dir))
    ring = KeyRing(root / "keys.json")
    user_key, _ = ring.create(["user-*", "team/*"], name="users")
    admin_key, _ = ring.create(["*"], name="admin")
    with serve_in_thread(mem, ring) as url:
        yield SimpleNamespace(url=url, mem=mem, ring=ring, user_key=user_key, admin_key=admin_key)


def test_remote_memory_does_what_the_local_store_does(service: Any) -> None:
    remote = RemoteMemory(service.url, api_key=service.user_key)
    ns = "user-1"
    rid = remote.add_turn(ns, "My locker code is 4471.", session_id="s1")
    assert rid == service.mem.get(ns, [rid])[0].id  # the service's store holds it
    ids = remote.add_turns(
        ns, [{"content": "I live in Lisbon."}, {"content": "Hi", "role": "assistant"}]
    )
    doc = remote.add_document(ns, "Biscuit is a corgi.", source="pets.txt")
    assert len(ids) == 2 and len(doc) == 1

    hits = remote.search(ns, "locker code", k=2, kind="turn")
    assert hits and isinstance(hits[0], Hit) and hits[0].text == "My locker code is 4471."
    assert hits == service.mem.search(ns, "locker code", k=2, kind="turn")
    records = remote.get(ns, [rid, doc[0]])
    assert [type(r) for r in records] == [Record, Record] and records[1].metadata[
        "source"
    ] == "pets.txt"
    assert remote.count(ns) == 4 and remote.count(ns, kind="document") == 1
    remote.update_metadata(ns, [rid], {"topic": "codes"})
    assert service.mem.get(ns, [rid])[0].metadata["topic"] == "codes"
    assert ns in remote.namespaces()
    st = remote.status()
    assert isinstance(st, StoreStatus) and ns in [n.namespace for n in st.namespaces]

    answer = remote.ask(ns, "What is my locker code?", mode="rag", max_new_tokens=4)
    local = service.mem.ask(ns, "What is my locker code?", mode="rag", max_new_tokens=4)
    assert isinstance(answer, Answer) and answer.text == local.text and answer.mode == "rag"
    assert answer.sources and isinstance(answer.sources[0], Hit)
    many = remote.ask_many(
        ns, ["Where do I live?", "What is my dog?"], mode="rag", max_new_tokens=3
    )
    assert [a.mode for a in many] == ["rag", "rag"]
    rec = remote.recall(ns, "locker code")
    assert isinstance(rec, Recall) and rec.text == "" and rec.confidence == 0.0  # no modules yet
    assert remote.route(ns, "locker code").chosen == ()
    assert remote.modules(ns) == []
    chat = remote.chat(ns, [{"role": "user", "content": "Hello"}], mode="base", max_new_tokens=3)
    assert chat.mode == "base"

    assert remote.delete(ns, [ids[1]]) == 1
    assert remote.count(ns) == 3
    gone = remote.forget(ns, where={"source": "pets.txt"}, rebuild=False, progress=True)
    assert isinstance(gone, ForgetReport) and gone.deleted == 1 and remote.count(ns) == 2


def test_the_service_raises_the_stores_typed_errors(service: Any) -> None:
    remote = RemoteMemory(service.url, api_key=service.user_key)
    remote.add_turn("user-2", "x")
    with pytest.raises(RecordNotFoundError, match="nope"):
        remote.get("user-2", ["nope"])
    with pytest.raises(InvalidInputError, match="k"):
        remote.search("user-2", "x", k=0)
    with pytest.raises(InvalidInputError, match="mode"):
        remote.ask("user-2", "x", mode="telepathy")
    with pytest.raises(InvalidInputError, match="turns"):  # a body the schema refuses
        remote.add_turns("user-2", [{"content": "a", "colour": "red"}])
    with pytest.raises(InvalidInputError, match="consolidation option"):
        remote.consolidate("user-2", colour="red")
    with pytest.raises(PermissionDeniedError, match="not granted"):
        remote.add_turn("admin-ns", "I should not be here")
    with pytest.raises(AuthenticationError):
        RemoteMemory(service.url, api_key="lmk_wrong").count("user-2")
    assert "admin-ns" not in service.mem.namespaces()  # nothing was written


async def test_async_twins_use_the_async_client(service: Any) -> None:
    remote = RemoteMemory(service.url, api_key=service.user_key)
    try:
        rid = await remote.aadd_turn("user-3", "My sister Ines visits on March 14th.")
        hits = await remote.asearch("user-3", "sister", k=1)
        assert hits[0].id == rid
        answer = await remote.aask("user-3", "Who visits?", mode="rag", max_new_tokens=3)
        assert answer.mode == "rag"
        with pytest.raises(RecordNotFoundError):
            await remote.aget("user-3", ["missing"])
    finally:
        await remote.aclose()


def test_namespaces_with_slashes_and_dots_stay_distinct(service: Any) -> None:
    remote = RemoteMemory(service.url, api_key=service.admin_key)
    names = ["team/a", "team%2Fa", "..", "../team/a", "team/a/turns", "ünï code ?#"]
    for name in names:
        remote.add_turn(name, f"fact of {name}")
    for name in names:
        assert [r.text for r in remote.get(name)] == [f"fact of {name}"]
        assert [r.text for r in service.mem.get(name)] == [f"fact of {name}"]
    # the user key's 'team/*' grant covers 'team/a' but not '../team/a'
    user = RemoteMemory(service.url, api_key=service.user_key)
    assert user.count("team/a") == 1
    with pytest.raises(PermissionDeniedError):
        user.count("../team/a")


# ---- auth over the whole route table: a new route cannot skip it ------------------------
_APP = create_app(cast(Any, SimpleNamespace(ask_many=None)), KeyRing(None), max_body_bytes=1 << 20)
ROUTES = routes_needing_a_key(_APP)


def test_the_route_table_is_what_the_auth_test_covers() -> None:
    """Every operation the OpenAPI schema lists is in the table (a route added through a
    router or a mount the table does not see would fail here)."""
    table = {(m, p.replace(":path", "")) for m, p in ROUTES}
    schema = {
        (method.upper(), path)
        for path, ops in _APP.openapi()["paths"].items()
        for method in ops
        if path not in PUBLIC_PATHS
    }
    assert schema <= table, schema - table
    assert ("POST", "/v1/chat/completions") in table and ("GET", "/v1/models") in table


# bodies a granted key gets an answer for (routes that take no namespace) or that name the
# foreign namespace in the body; the others are refused before their body is read
BODIES: dict[str, dict[str, Any]] = {
    "/v1/ask_many": {"namespaces": ["admin-only"], "questions": ["q"], "mode": "rag"},
    "/v1/chat/completions": {"model": "admin-only", "messages": [{"role": "user", "content": "q"}]},
    "/v1/generate": {"messages": [{"role": "user", "content": "q"}], "max_new_tokens": 2},
    "/v1/consolidate": {"options": {"min_records": 10**6}},  # every granted one: nothing to do
}


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_refuses_a_missing_a_wrong_and_a_foreign_key(
    service: Any, method: str, path: str
) -> None:
    url = service.url + path.replace("{namespace:path}", "admin-only").replace("{job_id}", "j1")
    body = BODIES.get(path, {})
    for headers in ({}, {"Authorization": "Bearer lmk_wrong"}, {"X-API-Key": "nope"}):
        r = httpx.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["type"] == "AuthenticationError"
        assert r.headers["www-authenticate"] == "Bearer"
    if path == "/mcp":  # the MCP tools check namespaces per call: tests/service/test_mcp.py
        return
    r = httpx.request(
        method, url, json=body, headers={"Authorization": f"Bearer {service.user_key}"}
    )
    if "{namespace" in path or path in ("/v1/ask_many", "/v1/chat/completions"):
        assert r.status_code == 403, r.text
        assert r.json()["error"]["type"] == "PermissionDeniedError"
    elif "{job_id}" in path:  # no such job for this key
        assert r.status_code == 404, r.text
    else:  # store-wide reads: only the namespaces the key may use
        assert r.status_code == 200
        assert "admin-only" not in json.dumps(r.json())
    assert "admin-only" not in service.mem.namespaces()


def test_public_routes_need_no_key(service: Any) -> None:
    assert httpx.get(service.url + "/v1/health").json()["status"] == "ok"
    schema = httpx.get(service.url + "/openapi.json").json()
    assert "/v1/namespaces/{namespace}/ask" in schema["paths"]


# ---- keys --------------------------------------------------------------------------------
def test_keys_are_stored_hashed_private_and_revocable(service: Any, tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    key, grant = ring.create(["user-9"], name="nine")
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    assert ring.authenticate(key) == grant and ring.authenticate("lmk_other") is None
    assert grant.allows("user-9") and not grant.allows("user-90")
    assert ring.revoke(grant.key_id) and ring.authenticate(key) is None
    assert not ring.revoke(grant.key_id)

    # a revoke on the running service's key file takes effect on the next request
    key2, g2 = service.ring.create(["user-*"])
    remote = RemoteMemory(service.url, api_key=key2)
    remote.add_turn("user-keys", "Written with a new key.")  # not depending on other tests
    assert remote.count("user-keys") == 1
    service.ring.revoke(g2.key_id)
    with pytest.raises(AuthenticationError):
        remote.count("user-keys")


def test_keys_created_at_once_are_all_kept(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    with cf.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: ring.create([f"user-{i}"])[0], range(8)))
    again = KeyRing(tmp_path / "keys.json")  # read from the file, not this ring's cache
    assert len(again.grants()) == 8
    assert all(again.authenticate(k) is not None for k in made)


def test_environment_keys_are_hashed_on_load(tmp_path: Path) -> None:
    ring = KeyRing(None, env={ENV_KEYS: json.dumps({"secret-1": ["a-*"]})})
    g = ring.authenticate("secret-1")
    assert g is not None and g.allows("a-1") and not g.allows("b")
    with pytest.raises(ConfigError, match=ENV_KEYS):
        KeyRing(None, env={ENV_KEYS: '["not", "an", "object"]'}).grants()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="key file"):
        KeyRing(tmp_path / "bad.json").grants()


def test_a_keyless_service_binds_to_loopback_only(tmp_path: Path) -> None:
    check_auth_setting("127.0.0.1", None)
    check_auth_setting("localhost", None)
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(ConfigError, match="loopback"):
            check_auth_setting(host, None)
    with pytest.raises(ConfigError, match="no API keys"):
        check_auth_setting("0.0.0.0", KeyRing(tmp_path / "none.json", env={}))


def test_cli_keys_and_serve_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    assert main(["keys", "create", str(store), "--namespace", "user-*", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("lmk_") and created["namespaces"] == ["user-*"]
    assert main(["keys", "list", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert [k["key_id"] for k in listed] == [created["key_id"]] and "key" not in listed[0]
    assert main(["serve", str(store), "--no-auth", "--host", "0.0.0.0"]) == 1
    assert "loopback" in capsys.readouterr().err
    assert main(["keys", "revoke", str(store), created["key_id"]]) == 0
    assert main(["keys", "revoke", str(store), created["key_id"]]) == 1


# ---- micro-batching ----------------------------------------------------------------------
def test_concurrent_questions_share_forward_passes(tmp_path: Path, tiny_model_dir: Path) -> None:
    mem = LoRAMemory.open(tmp_path / "store", base_model=str(tiny_model_dir))
    questions = [f"What is fact {i}?" for i in range(8)]
    for i in range(8):
        mem.add_turn(f"user-{i}", f"Fact {i} is {i * 7}.")
    alone = [mem.ask(f"user-{i}", q, mode="rag", max_new_tokens=4) for i, q in enumerate(questions)]
    with serve_in_thread(mem, None, batch_wait_s=0.2) as url:
        remote = RemoteMemory(url)
        with cf.ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(remote.ask, f"user-{i}", q, mode="rag", max_new_tokens=4)
                for i, q in enumerate(questions)
            ]
            together = [f.result() for f in futures]
        stats = httpx.get(url + "/v1/health").json()
    assert [a.text for a in together] == [a.text for a in alone]
    assert [a.sources[0].text for a in together] == [f"Fact {i} is {i * 7}." for i in range(8)]
    assert stats["batching"]["questions"] == 8 and stats["batching"]["batches"] < 8


def test_oversized_bodies_and_unknown_routes_get_typed_errors(service: Any) -> None:
    with serve_in_thread(service.mem, None, max_body_bytes=4000) as url:
        remote = RemoteMemory(url)
        with pytest.raises(TextTooLargeError, match="4,000 bytes"):
            remote.add_document("user-big", "word " * 2000)
        assert "user-big" not in service.mem.namespaces()

        def chunks() -> Any:  # no Content-Length: the chunks add up past the limit
            yield b'{"text": "'
            for _ in range(10):
                yield b"word " * 100
            yield b'"}'

        r = httpx.post(f"{url}/v1/namespaces/user-big/documents", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["type"] == "TextTooLargeError"
        assert "user-big" not in service.mem.namespaces()
        r = httpx.get(url + "/v1/nope")
        assert r.status_code == 404 and r.json()["error"]["type"] == "InvalidInputError"
        r = httpx.get(url + "/v1/namespaces/user-1/ask")  # a POST route
        assert (
            r.status_code == 405 and "GET /v1/namespaces/user-1/ask" in r.json()["error"]["message"]
        )


async def test_an_unreachable_service_is_a_typed_error() -> None:
    from lora_memory_plugin import BackendError
    from lora_memory_plugin.testing import free_port

    remote = RemoteMemory(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(BackendError, match="cannot reach the memory service"):
        remote.count("user-1")
    with pytest.raises(BackendError, match="lora-memory serve"):
        await remote.acount("user-1")
    with pytest.raises(BackendError):
        remote.config  # noqa: B018
    await remote.aclose()
