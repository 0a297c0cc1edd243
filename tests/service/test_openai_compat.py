"""The OpenAI-compatible routes with real clients: the ``openai`` package and LangChain's
``ChatOpenAI``, pointed at the service on 127.0.0.1 (``model`` = the namespace)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin.service.keys import KeyRing
from lora_memory_plugin.testing import serve_in_thread

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    root = tmp_path_factory.mktemp("openai")
    mem = LoRAMemory.open(root / "store", base_model=str(tiny_model_dir))
    mem.add_turn("user-1", "My locker code is 4471.")
    mem.add_turn("user-2", "My dog is called Biscuit.")
    mem.add_turn("admin", "The admin password is hunter2.")
    ring = KeyRing(root / "keys.json")
    key, _ = ring.create(["user-*"])
    with serve_in_thread(mem, ring) as url:
        yield SimpleNamespace(url=url, mem=mem, key=key)


def test_openai_client_lists_namespaces_and_answers_from_one(service: Any) -> None:
    client = openai.OpenAI(base_url=service.url + "/v1", api_key=service.key)
    assert sorted(m.id for m in client.models.list()) == ["user-1", "user-2"]  # not 'admin'
    done = client.chat.completions.create(
        model="user-1",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is my locker code?"},
        ],
        max_tokens=4,
        extra_body={"mode": "rag"},
    )
    local = service.mem.ask("user-1", "What is my locker code?", mode="rag", max_new_tokens=4)
    assert done.choices[0].message.content == local.text
    assert done.choices[0].finish_reason == "stop" and done.model == "user-1"
    provenance = done.model_extra["lora_memory"]  # which mode and modules answered
    assert provenance["mode"] == "rag" and provenance["modules"] == []
    assert provenance["sources"][0]["text"] == "My locker code is 4471."
    assert done.usage is not None and done.usage.completion_tokens == local.new_tokens

    parts = client.chat.completions.create(  # content as OpenAI's list of parts
        model="user-1",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is my locker code?"}]}
        ],
        max_tokens=4,
        extra_body={"mode": "rag"},
    )
    assert parts.choices[0].message.content == local.text

    auto = client.chat.completions.create(
        model="user-1", messages=[{"role": "user", "content": "What is my locker code?"}]
    )
    assert auto.model_extra["lora_memory"]["requested_mode"] == "auto"


def test_openai_client_streams_the_same_answer(service: Any) -> None:
    client = openai.OpenAI(base_url=service.url + "/v1", api_key=service.key)
    stream = client.chat.completions.create(
        model="user-2",
        messages=[{"role": "user", "content": "What is my dog called?"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mode": "rag"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    local = service.mem.ask("user-2", "What is my dog called?", mode="rag", max_new_tokens=5)
    assert text == local.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == local.new_tokens


def test_openai_client_gets_typed_refusals(service: Any) -> None:
    client = openai.OpenAI(base_url=service.url + "/v1", api_key=service.key, max_retries=0)
    ask = {"messages": [{"role": "user", "content": "What is the admin password?"}]}
    with pytest.raises(openai.PermissionDeniedError, match="not granted"):
        client.chat.completions.create(model="admin", **ask)  # type: ignore[call-overload]
    bad = openai.OpenAI(base_url=service.url + "/v1", api_key="lmk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="user-1", **ask)  # type: ignore[call-overload]
    with pytest.raises(openai.UnprocessableEntityError, match="no user message"):
        client.chat.completions.create(
            model="user-1", messages=[{"role": "system", "content": "Be brief."}]
        )


def test_langchain_chat_openai_works_as_is(service: Any) -> None:
    llm = ChatOpenAI(
        base_url=service.url + "/v1",
        api_key=service.key,  # type: ignore[arg-type]
        model="user-1",
        max_tokens=4,
        max_retries=0,
        extra_body={"mode": "rag"},
    )
    reply = llm.invoke("What is my locker code?")
    local = service.mem.ask("user-1", "What is my locker code?", mode="rag", max_new_tokens=4)
    assert reply.content == local.text
    streamed = "".join(str(c.content) for c in llm.stream("What is my locker code?"))
    assert streamed == local.text
