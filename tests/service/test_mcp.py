"""The memory as MCP tools, against the real MCP client SDK (v2): streamable HTTP on the service
app (API keys, granted namespaces) and stdio (``lora-memory mcp DIR`` in a subprocess)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin.service.keys import KeyRing
from lora_memory_plugin.testing import serve_in_thread

pytestmark = pytest.mark.usefixtures("one_thread")

TOOLS = {"remember", "search", "recall", "ask", "forget"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    root = tmp_path_factory.mktemp("mcp")
    mem = LoRAMemory.open(root / "store", base_model=str(tiny_model_dir))
    ring = KeyRing(root / "keys.json")
    user_key, _ = ring.create(["user-*"], name="users")
    admin_key, _ = ring.create(["*"], name="admin")
    with serve_in_thread(mem, ring) as url:  # create_app mounts /mcp
        yield SimpleNamespace(url=url, mem=mem, user_key=user_key, admin_key=admin_key)


@asynccontextmanager
async def http_session(url: str, key: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP session over streamable HTTP, sending ``key`` as a Bearer token."""
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_the_tools_over_streamable_http(service: Any) -> None:
    async with http_session(service.url, service.user_key) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == TOOLS
        assert all(t.description and len(t.description) > 80 for t in tools.values())
        assert tools["ask"].input_schema["properties"]["mode"]["default"] == "auto"
        assert tools["forget"].annotations and tools["forget"].annotations.destructive_hint

        ns = "user-1"
        fact = "My locker code is 4471."
        rid = data(await session.call_tool("remember", {"namespace": ns, "text": fact}))["id"]
        other = data(
            await session.call_tool(
                "remember", {"namespace": ns, "text": "I live in Lisbon.", "session_id": "s1"}
            )
        )["id"]
        assert service.mem.get(ns, [rid])[0].text == fact  # the service's store holds it
        assert service.mem.get(ns, [other])[0].metadata["session_id"] == "s1"

        hits = data(
            await session.call_tool("search", {"namespace": ns, "query": "locker code", "k": 2})
        )["hits"]
        assert hits[0]["id"] == rid and hits[0]["text"] == fact
        assert hits[0]["metadata"]["role"] == "user"

        before = httpx.get(f"{service.url}/v1/health").json()["batching"]["questions"]
        answer = data(
            await session.call_tool(
                "ask", {"namespace": ns, "question": "What is my locker code?", "mode": "rag"}
            )
        )
        assert answer["mode"] == "rag" and answer["requested_mode"] == "rag"
        # it went through the service's micro-batcher, with the REST and OpenAI questions
        assert httpx.get(f"{service.url}/v1/health").json()["batching"]["questions"] == before + 1
        assert isinstance(answer["text"], str) and answer["modules"] == []
        assert rid in [s["id"] for s in answer["sources"]]

        recalled = data(await session.call_tool("recall", {"namespace": ns, "query": "locker"}))
        assert recalled["text"] == "" and recalled["confidence"] == 0.0  # no modules yet

        report = data(await session.call_tool("forget", {"namespace": ns, "ids": [other]}))
        assert report["deleted"] == 1 and report["namespace"] == ns
        assert service.mem.count(ns) == 1


async def test_a_key_reaches_only_its_namespaces(service: Any) -> None:
    async with http_session(service.url, service.user_key) as session:
        for tool, args in (
            ("remember", {"text": "I should not be here"}),
            ("search", {"query": "anything"}),
            ("ask", {"question": "anything?", "mode": "rag"}),
            ("forget", {"ids": ["x"]}),
        ):
            result = await session.call_tool(tool, {"namespace": "admin-x", **args})
            assert result.is_error, tool
            assert "PermissionDeniedError" in text(result) and "'admin-x'" in text(result)
        granted = await session.call_tool("remember", {"namespace": "user-2", "text": "ok"})
        assert not granted.is_error
    assert "admin-x" not in service.mem.namespaces()  # nothing was written

    # per request, not per server: the admin key, on its own session, may use it
    async with http_session(service.url, service.admin_key) as session:
        data(await session.call_tool("remember", {"namespace": "admin-x", "text": "mine"}))
    assert service.mem.count("admin-x") == 1


async def test_store_errors_are_tool_errors_with_their_message(service: Any) -> None:
    async with http_session(service.url, service.user_key) as session:
        too_long = await session.call_tool("search", {"namespace": "user-3", "query": "x" * 9000})
        assert too_long.is_error and "TextTooLargeError: query is 9,000" in text(too_long)
        bad_mode = await session.call_tool(
            "ask", {"namespace": "user-3", "question": "?", "mode": "telepathy"}
        )
        assert bad_mode.is_error and "mode" in text(bad_mode)
        bad_k = await session.call_tool("search", {"namespace": "user-3", "query": "x", "k": 0})
        assert bad_k.is_error


async def test_the_high_level_client_negotiates_and_is_checked_too(service: Any) -> None:
    headers = {"X-API-Key": service.user_key}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        Client(streamable_http_client(f"{service.url}/mcp", http_client=http)) as client,
    ):
        # the sessionless 2026 protocol: each request stands alone, checked on its own
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        ok = await client.call_tool("remember", {"namespace": "user-4", "text": "Biscuit"})
        assert not ok.is_error
        denied = await client.call_tool("remember", {"namespace": "admin-y", "text": "no"})
        assert denied.is_error and "'admin-y'" in text(denied)
    assert service.mem.count("user-4") == 1 and "admin-y" not in service.mem.namespaces()


def test_without_a_valid_key_the_endpoint_answers_401(service: Any) -> None:
    url = f"{service.url}/mcp"
    for headers in ({}, {"Authorization": "Bearer lmk_wrong"}, {"X-API-Key": "lmk_wrong"}):
        r = httpx.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "AuthenticationError"
        assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(url, headers=MCP_HEADERS)
    assert r.status_code == 401


def test_a_session_belongs_to_the_key_that_opened_it(service: Any) -> None:
    url = f"{service.url}/mcp"
    opened = httpx.post(
        url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {service.user_key}"}
    )
    assert opened.status_code == 200
    sid = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    other = {**MCP_HEADERS, "Authorization": f"Bearer {service.admin_key}", "mcp-session-id": sid}
    assert httpx.post(url, json=listing, headers=other).status_code == 404
    own = {**other, "Authorization": f"Bearer {service.user_key}"}
    assert httpx.delete(url, headers=own).status_code == 200


def test_without_keys_only_loopback_hosts_and_origins(service: Any) -> None:
    with serve_in_thread(service.mem, None) as url:
        assert httpx.post(f"{url}/mcp", json=INITIALIZE, headers=MCP_HEADERS).status_code == 200
        evil = {**MCP_HEADERS, "Origin": "http://evil.example"}
        assert httpx.post(f"{url}/mcp", json=INITIALIZE, headers=evil).status_code == 403
        rebound = {**MCP_HEADERS, "Host": "evil.example"}
        assert httpx.post(f"{url}/mcp", json=INITIALIZE, headers=rebound).status_code == 421


async def test_stdio_serves_the_local_store(tmp_path: Path, tiny_model_dir: Path) -> None:
    store = tmp_path / "store"
    LoRAMemory.open(store, base_model=str(tiny_model_dir))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lora_memory_plugin.cli.main", "mcp", str(store)],
        env=dict(os.environ),  # HF offline settings, the venv
    )
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS
            fact = "Biscuit is a corgi."
            rid = data(await session.call_tool("remember", {"namespace": "anyone", "text": fact}))[
                "id"
            ]
            hits = data(
                await session.call_tool("search", {"namespace": "anyone", "query": "corgi"})
            )["hits"]
            assert [h["id"] for h in hits] == [rid] and hits[0]["text"] == fact
    assert LoRAMemory.open(store).get("anyone", [rid])[0].text == fact  # on disk


async def test_mcp_openai_and_remote_memory_share_one_service(service: Any) -> None:
    """Three kinds of agent on one running service: an MCP agent remembers, a Python agent
    (RemoteMemory, as the LangChain and LlamaIndex classes use it) finds it and adds to it, and an
    OpenAI client's answer reads both from the same namespace."""
    import openai

    from lora_memory_plugin.remote import RemoteMemory

    ns = "user-shared"
    async with http_session(service.url, service.user_key) as session:
        said = "My bike is a green Brompton."
        rid = data(await session.call_tool("remember", {"namespace": ns, "text": said}))["id"]
    python_agent = RemoteMemory(service.url, api_key=service.user_key)
    assert python_agent.search(ns, "bike", k=1)[0].id == rid
    python_agent.add_turn(ns, "I keep the bike in the hallway.")
    client = openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=service.user_key)
    done = await client.chat.completions.create(
        model=ns,
        messages=[{"role": "user", "content": "Where is my bike and what is it?"}],
        max_tokens=4,
        extra_body={"mode": "rag"},
    )
    sources = {s["text"] for s in done.model_extra["lora_memory"]["sources"]}
    assert sources == {said, "I keep the bike in the hallway."}
    async with http_session(service.url, service.user_key) as session:
        hits = data(await session.call_tool("search", {"namespace": ns, "query": "hallway"}))
    assert hits["hits"][0]["text"] == "I keep the bike in the hallway."
