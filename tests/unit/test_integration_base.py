"""lora_memory_plugin.integration: what the LangChain and LlamaIndex integrations build on."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, PrivateAttr

from lora_memory_plugin import InvalidInputError, InvalidTypeError, LoRAMemory
from lora_memory_plugin.generation import prompts
from lora_memory_plugin.integration import (
    BUFFER_ROLES,
    MemoryArg,
    MemoryBacked,
    PathArg,
    check_namespace,
    format_record,
    message_role,
    message_text,
    resolve_memory,
)


@pytest.fixture(scope="module")
def mem(tmp_path_factory: pytest.TempPathFactory) -> LoRAMemory:
    """A store that is only opened (no model loads, nothing written)."""
    return LoRAMemory.open(tmp_path_factory.mktemp("integration") / "store")


# ---- a framework's base classes, as the integrations subclass them --------------------------
class FrameworkBase:
    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self.seen_memory = hasattr(self, "_memory")  # the store is resolved after this


class Retriever(MemoryBacked, FrameworkBase):
    def __init__(
        self, *, memory: MemoryArg = None, path: PathArg = None, namespace: str, k: int = 4
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.k = k
        super().__init__(memory=memory, path=path, verbose=True)


class Model(MemoryBacked, BaseModel):
    namespace: str | None = None
    path: str | None = None

    _memory: LoRAMemory = PrivateAttr()

    def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **data: Any) -> None:
        super().__init__(memory=memory, path=path, **data)


class PathModel(Model):
    _keep_path: ClassVar[bool] = True

    def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **data: Any) -> None:
        super().__init__(memory=memory, path=path, **data)


# ---- resolve_memory / MemoryBacked -----------------------------------------------------------
def test_resolve_memory_takes_exactly_one_of_memory_and_path(mem: LoRAMemory) -> None:
    assert resolve_memory(mem, None) is mem
    assert resolve_memory(None, mem.path).path == mem.path
    with pytest.raises(InvalidInputError, match=r"^Owner: pass exactly one .* got both$"):
        resolve_memory(mem, mem.path, owner="Owner")
    with pytest.raises(InvalidInputError, match="got neither"):
        resolve_memory(None, None)
    with pytest.raises(
        InvalidTypeError, match="memory= must be a LoRAMemory or a RemoteMemory, got str"
    ):
        resolve_memory("./store", None)  # type: ignore[arg-type]


def test_memory_backed_passes_other_arguments_on_then_resolves(mem: LoRAMemory) -> None:
    r = Retriever(memory=mem, namespace="user-42")
    assert r.memory is mem and r.namespace == "user-42" and r.k == 4
    assert r.verbose is True and r.seen_memory is False
    assert Retriever(path=mem.path, namespace="n").memory.path == mem.path


def test_memory_backed_errors_name_the_class(mem: LoRAMemory) -> None:
    with pytest.raises(InvalidInputError, match=r"^Retriever: pass exactly one of memory="):
        Retriever(memory=mem, path=mem.path, namespace="n")
    with pytest.raises(InvalidInputError, match=r"^Retriever: pass memory= .* got neither$"):
        Retriever(namespace="n")
    with pytest.raises(InvalidTypeError, match=r"^Retriever: memory= must be a LoRAMemory"):
        Retriever(memory=object(), namespace="n")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="namespace must be a non-empty str, got ''"):
        Retriever(memory=mem, namespace="")  # checked before the store is resolved


def test_pydantic_models_keep_the_store_private(mem: LoRAMemory) -> None:
    m = Model(memory=mem, namespace="ns")
    assert m.memory is mem and m.model_dump() == {"namespace": "ns", "path": None}
    by_path = Model(path=mem.path)
    assert by_path.memory.path == mem.path and by_path.path is None  # path= not a field value
    kept = PathModel(path=Path(mem.path))
    assert kept.path == str(mem.path) and kept.memory.path == mem.path
    assert PathModel(memory=mem).model_dump() == {"namespace": None, "path": None}
    with pytest.raises(InvalidInputError, match=r"^PathModel: .* got neither$"):
        PathModel()


# ---- namespaces -------------------------------------------------------------------------------
def test_check_namespace() -> None:
    assert check_namespace("user-42") == "user-42"
    for bad in ("", None, 42, b"ns"):
        message = f"namespace must be a non-empty str, got {bad!r}"
        with pytest.raises(InvalidInputError, match=message):
            check_namespace(bad)
    with pytest.raises(InvalidInputError, match=r"^Block needs a namespace: pass session_id=$"):
        check_namespace(None, "Block needs a namespace: pass session_id=")


# ---- messages ---------------------------------------------------------------------------------
@dataclass
class TextBlock:  # LlamaIndex's shape
    text: str
    block_type: str = "text"


@dataclass
class ImageBlock:
    url: str
    block_type: str = "image"


class Role(str, Enum):
    USER = "user"
    DEVELOPER = "developer"
    FUNCTION = "function"


@dataclass
class LlamaMessage:
    role: Role
    blocks: list[Any] = field(default_factory=list)


@dataclass
class LangChainMessage:
    content: Any
    type: str = "human"


def test_message_text_of_each_framework_shape() -> None:
    assert message_text("plain text") == "plain text"
    llama = LlamaMessage(Role.USER, [TextBlock("one"), ImageBlock("x.png"), TextBlock("two")])
    assert message_text(llama) == "one\ntwo"
    assert message_text(LlamaMessage(Role.USER, [ImageBlock("x.png")])) == ""
    assert message_text(LangChainMessage("hello")) == "hello"
    blocks = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "x.png"}},
        "b",
        {"type": "tool_call", "name": "search"},
        {"type": "text"},  # no text: skipped
    ]
    assert message_text(LangChainMessage(blocks)) == "a\nb"
    assert message_text(blocks) == "a\nb"
    assert message_text({"role": "user", "content": blocks}) == "a\nb"  # an OpenAI message
    assert message_text({"role": "assistant", "content": "hi"}) == "hi"
    for bad in (42, b"bytes"):
        with pytest.raises(InvalidTypeError, match=f"got {type(bad).__name__}"):
            message_text(bad)


def test_message_role_maps_every_role_onto_a_buffer_role() -> None:
    assert message_role(Role.USER) == "user"
    assert message_role(Role.DEVELOPER) == "system"
    assert message_role(Role.FUNCTION) == "tool"
    assert [message_role(r) for r in ("human", "ai", "chatbot", "model", "system", "tool")] == [
        "user",
        "assistant",
        "assistant",
        "assistant",
        "system",
        "tool",
    ]
    assert message_role("narrator") == "user"  # unknown: input to the model
    assert {message_role(r) for r in BUFFER_ROLES} == set(BUFFER_ROLES)


# ---- the public surface -----------------------------------------------------------------------
def test_format_record_is_the_core_one() -> None:
    assert format_record is prompts.format_record


def test_import_is_light() -> None:
    code = (
        "import sys, lora_memory_plugin.integration\n"
        "heavy = [m for m in ('torch', 'transformers', 'chromadb', 'langchain_core', "
        "'llama_index', 'peft', 'lora_memory_plugin.memory') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
