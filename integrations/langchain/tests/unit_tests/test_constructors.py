"""Every class reaches the store one way: memory= or path=, never both or neither."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_lora_memory import (
    ChatLoRAMemory,
    LoRAMemoryChatMessageHistory,
    LoRAMemoryMiddleware,
    LoRAMemoryRetriever,
    LoRAMemoryStore,
)

BUILDERS: dict[str, Any] = {
    "retriever": lambda **kw: LoRAMemoryRetriever(namespace="ns", **kw),
    "store": LoRAMemoryStore,
    "middleware": lambda **kw: LoRAMemoryMiddleware(namespace="ns", **kw),
    "chat_model": lambda **kw: ChatLoRAMemory(namespace="ns", **kw),
    "history": lambda **kw: LoRAMemoryChatMessageHistory(namespace="ns", session_id="s", **kw),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_memory_and_path_conflict(name: str, memory: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        BUILDERS[name](memory=memory, path=tmp_path / "other")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_memory_or_path_required(name: str) -> None:
    with pytest.raises(ValueError, match=r"pass memory= .* or path="):
        BUILDERS[name]()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_memory_must_be_a_lora_memory(name: str) -> None:
    with pytest.raises(TypeError, match="LoRAMemory"):
        BUILDERS[name](memory=object())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_path_opens_the_store(name: str, memory: Any) -> None:
    obj = BUILDERS[name](path=memory.path)
    assert obj.memory.path == memory.path


def test_retriever_rejects_bad_options(memory: Any) -> None:
    with pytest.raises(ValueError, match="search_kwargs has unknown keys"):
        LoRAMemoryRetriever(memory=memory, namespace="ns", search_kwargs={"colour": "red"})
    with pytest.raises(ValueError):
        LoRAMemoryRetriever(memory=memory, namespace="ns", mode="rag")


def test_middleware_needs_a_namespace_source(memory: Any) -> None:
    with pytest.raises(ValueError, match="needs a namespace"):
        LoRAMemoryMiddleware(memory=memory, context_key=None)
    with pytest.raises(ValueError, match="write_roles"):
        LoRAMemoryMiddleware(memory=memory, write_roles=("robot",))


def test_store_rejects_bad_options(memory: Any) -> None:
    with pytest.raises(ValueError, match="index_fields"):
        LoRAMemoryStore(memory=memory, index_fields="content")
    with pytest.raises(ValueError, match="separator"):
        LoRAMemoryStore(memory=memory, separator="\\")
    store = LoRAMemoryStore(memory=memory)
    assert store.memory_namespace(("memories", "user-42")) == "memories/user-42"
    # distinct tuples never share a namespace (its collection and its LoRA modules)
    tuples = [
        ("memories", "alice", "notes"),
        ("memories", "alice/notes"),
        ("memories", "alice\\", "notes"),
        ("memories", "alice\\/notes"),
        ("memories/alice", "notes"),
    ]
    names = [store.memory_namespace(t) for t in tuples]
    assert len(set(names)) == len(tuples), names
    assert names[1] == "memories/alice\\/notes"
