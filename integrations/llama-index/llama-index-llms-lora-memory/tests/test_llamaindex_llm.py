"""LoRAMemoryLLM: complete, chat and stream (sync and async) on the tiny model and its module."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import llama_index.llms.lora_memory as pkg
import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import LLM
from llama_index.llms.lora_memory import LoRAMemoryLLM

from lora_memory_plugin import InvalidInputError, UnknownNamespaceError

QUESTION = "What is the code of box 2?"


def call(llm: LoRAMemoryLLM, method: str, arg: Any, use_async: bool) -> Any:
    """``llm.<method>(arg)``, or its async twin awaited (streams collected into a list)."""
    if not use_async:
        out = getattr(llm, method)(arg)
        return list(out) if method.startswith("stream") else out

    async def run() -> Any:
        out = await getattr(llm, "a" + method)(arg)
        return [x async for x in out] if method.startswith("stream") else out

    return asyncio.run(run())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_complete_and_chat_answer_with_the_routed_module(facts, use_async):
    llm = LoRAMemoryLLM(memory=facts.mem, namespace=facts.namespace, max_new_tokens=6)

    done = call(llm, "complete", QUESTION, use_async)
    assert done.text == "1185"  # the module's answer: no retrieved text in the prompt
    info = done.additional_kwargs
    assert info["mode"] == "lora" and info["requested_mode"] == "lora"
    assert info["modules"] == [facts.module_id] and info["namespace"] == facts.namespace
    assert info["confidence"] > 0.5 and info["sources"] == [] and info["notes"] == []
    assert done.raw["route"]["chosen"] == [facts.module_id]  # the core's whole Answer

    # A whole conversation goes to the model, with the module routed from its last question.
    history = [
        ChatMessage(role="system", content="You answer from memory."),
        ChatMessage(role="user", content="Hello!"),
        ChatMessage(role="assistant", content="Hi, how can I help?"),
        ChatMessage(role="user", content=QUESTION),
    ]
    chat = call(llm, "chat", history, use_async)
    assert chat.message.role.value == "assistant" and chat.message.content == "1185"
    assert chat.additional_kwargs["mode"] == "lora" and chat.additional_kwargs["notes"] == []
    assert chat.additional_kwargs["modules"] == [facts.module_id]
    short = call(llm, "chat", [history[0], history[-1]], use_async)
    assert chat.raw["context_tokens"] > short.raw["context_tokens"]  # the history was sent


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_streams_yield_the_whole_answer_once(facts, use_async):
    llm = LoRAMemoryLLM(memory=facts.mem, namespace=facts.namespace, max_new_tokens=6)
    [chunk] = call(llm, "stream_complete", QUESTION, use_async)
    assert chunk.text == chunk.delta == "1185"
    assert chunk.additional_kwargs["modules"] == [facts.module_id]
    [message] = call(llm, "stream_chat", [ChatMessage(role="user", content=QUESTION)], use_async)
    assert message.delta == message.message.content == "1185"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_base_model_and_fallback_are_reported(facts, fresh_ns, use_async):
    mem = facts.mem
    base = LoRAMemoryLLM(memory=mem, max_new_tokens=5)  # no namespace: the base model alone
    messages = [ChatMessage(role="user", content=QUESTION)]
    r = call(base, "chat", messages, use_async)
    info = r.additional_kwargs
    assert info["mode"] == "base" and info["modules"] == [] and info["namespace"] is None
    # The same text the core's generator gives for the same conversation (and system prompt).
    direct = mem.generator().chat(
        [
            {"role": "system", "content": mem.config.generation.system_prompt},
            {"role": "user", "content": QUESTION},
        ],
        max_new_tokens=5,
    )
    assert r.message.content == direct.text and info["new_tokens"] == direct.new_tokens

    # A namespace with records but no module yet: the base model answers, and says so.
    mem.add_turn(fresh_ns, "The spare key is under the blue flower pot.")
    r = call(
        LoRAMemoryLLM(memory=mem, namespace=fresh_ns), "complete", "Where is the key?", use_async
    )
    info = r.additional_kwargs
    assert info["requested_mode"] == "lora" and info["mode"] == "base" and info["modules"] == []
    assert info["notes"][0].startswith("no module answered")

    # A retrieval mode: LoRAMemory.ask on the last user message, buffer records in the prompt.
    rag = LoRAMemoryLLM(memory=mem, namespace=fresh_ns, mode="rag", max_new_tokens=5)
    turns = [
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="user", content="Where is the key?"),
    ]
    r = call(rag, "chat", turns, use_async)
    info = r.additional_kwargs
    assert info["mode"] == "rag" and len(info["sources"]) == 1
    assert info["notes"] == ["1 earlier message(s) not sent: ask() answers one question"]
    assert r.raw["sources"][0]["text"] == "The spare key is under the blue flower pot."


def test_metadata_constructor_and_errors(facts, facts_store, fresh_ns):  # path=: a local store
    assert pkg.__all__ == ["LoRAMemoryLLM"]
    llm = LoRAMemoryLLM(path=facts_store.mem.path, namespace=facts.namespace, max_new_tokens=7)
    assert isinstance(llm, LLM) and llm.memory.path == facts_store.mem.path
    meta = llm.metadata
    assert meta.is_chat_model and meta.num_output == 7
    assert meta.model_name == facts.mem.config.models.base_model
    assert meta.context_window == 2048  # the tiny model's 2048 positions (under ask's limit)
    assert LoRAMemoryLLM.class_name() == "LoRAMemoryLLM"

    with pytest.raises(InvalidInputError, match="mode must be one of"):
        LoRAMemoryLLM(memory=facts.mem, namespace=facts.namespace, mode="fast")
    with pytest.raises(InvalidInputError, match="exactly one of memory="):
        LoRAMemoryLLM(memory=facts.mem, path=facts_store.mem.path)
    rag = LoRAMemoryLLM(memory=facts.mem, namespace=fresh_ns, mode="rag")
    with pytest.raises(InvalidInputError, match="last user message"):
        rag.chat([ChatMessage(role="system", content="Be brief.")])
    with pytest.raises(UnknownNamespaceError):
        rag.complete(QUESTION)  # ask() needs records to retrieve from


def test_pep420_layout():
    root = Path(pkg.__file__).parents[2]
    assert root.name == "llama_index"
    assert not (root / "__init__.py").exists() and not (root / "llms" / "__init__.py").exists()
    assert (root / "llms" / "lora_memory" / "py.typed").is_file()
