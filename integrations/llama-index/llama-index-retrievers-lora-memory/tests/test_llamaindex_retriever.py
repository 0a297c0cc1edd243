"""LoRAMemoryRetriever alone and inside a real RetrieverQueryEngine, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_index.retrievers.lora_memory as pkg
import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
from llama_index.core.llms import MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode
from llama_index.llms.lora_memory import LoRAMemoryLLM
from llama_index.retrievers.lora_memory import LoRAMemoryRetriever

from lora_memory_plugin import InvalidInputError

QUESTION = "What is the code of box 2?"
RECORD = f"Question: {QUESTION} Answer: 1185"


class ChatEnds(BaseEventHandler):
    """Collects what every LLM chat call returned (LlamaIndex's instrumentation events)."""

    events: list[LLMChatEndEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "ChatEnds"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatEndEvent):
            self.events.append(event)


@pytest.fixture
def llm_events() -> Iterator[list[LLMChatEndEvent]]:
    handler = ChatEnds()
    dispatcher = get_dispatcher()  # the root: every LLM's events propagate to it
    dispatcher.add_event_handler(handler)
    yield handler.events
    dispatcher.event_handlers.remove(handler)


def retrieve(retriever: BaseRetriever, query: str, use_async: bool):
    return asyncio.run(retriever.aretrieve(query)) if use_async else retriever.retrieve(query)


def query(engine: RetrieverQueryEngine, text: str, use_async: bool):
    return asyncio.run(engine.aquery(text)) if use_async else engine.query(text)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_recollection_then_buffer_hits(facts, use_async):
    retriever = LoRAMemoryRetriever(memory=facts.mem, namespace=facts.namespace)
    nodes = retrieve(retriever, QUESTION, use_async)

    recalled, *hits = nodes
    assert recalled.node.get_content() == "1185"  # the module answers, no text retrieved
    assert recalled.node.metadata["memory_tier"] == "parametric"
    assert recalled.node.metadata["modules"] == [facts.module_id]
    assert recalled.node.metadata["namespace"] == facts.namespace
    assert recalled.score == recalled.node.metadata["confidence"] > 0.5
    # The LLM sees the recollection's text only, not its bookkeeping.
    assert recalled.node.get_content(metadata_mode=MetadataMode.LLM) == "1185"

    assert 1 <= len(hits) <= 4
    assert hits[0].node.get_content() == RECORD and hits[0].node.node_id in facts.record_ids
    assert all(h.node.metadata["memory_tier"] == "buffer" for h in hits)
    assert all(h.node.metadata["module_id"] == facts.module_id for h in hits)
    assert all(h.node.metadata["status"] == "consolidated" for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.8
    assert hits[0].node.get_content(metadata_mode=MetadataMode.LLM) == f"role: user\n\n{RECORD}"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_tiers_filters_and_unknown_namespace(facts, fresh_ns, use_async):
    mem = facts.mem
    buffer_only = LoRAMemoryRetriever(memory=mem, namespace=facts.namespace, include_recall=False)
    nodes = retrieve(buffer_only, QUESTION, use_async)
    assert nodes and {n.node.metadata["memory_tier"] for n in nodes} == {"buffer"}

    recall_only = LoRAMemoryRetriever(memory=mem, namespace=facts.namespace, include_buffer=False)
    [node] = retrieve(recall_only, QUESTION, use_async)
    assert node.node.metadata["memory_tier"] == "parametric"

    # No module matches an unrelated query, and min_score keeps weak hits out: nothing.
    strict = LoRAMemoryRetriever(memory=mem, namespace=facts.namespace, min_score=0.9)
    assert retrieve(strict, "Which wine goes with grilled fish?", use_async) == []

    # search_kwargs reach LoRAMemory.search: no buffered record is left in this namespace.
    buffered = LoRAMemoryRetriever(
        memory=mem, namespace=facts.namespace, search_kwargs={"status": "buffered"}
    )
    assert [n.node.metadata["memory_tier"] for n in retrieve(buffered, QUESTION, use_async)] == [
        "parametric"
    ]

    empty = LoRAMemoryRetriever(memory=mem, namespace=fresh_ns)  # never written to
    assert retrieve(empty, QUESTION, use_async) == []


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_query_engine_with_mock_llm(facts, use_async):
    retriever = LoRAMemoryRetriever(memory=facts.mem, namespace=facts.namespace)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = query(engine, QUESTION, use_async)

    # MockLLM echoes its prompt: both tiers reached the LLM, recollection first.
    prompt = str(response)
    assert QUESTION in prompt
    assert prompt.index("1185") < prompt.index(RECORD)
    tiers = [n.node.metadata["memory_tier"] for n in response.source_nodes]
    assert tiers[0] == "parametric" and set(tiers[1:]) == {"buffer"}
    assert response.source_nodes[0].node.metadata["modules"] == [facts.module_id]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_query_engine_with_lora_memory_llm(facts, llm_events, use_async):
    llm = LoRAMemoryLLM(memory=facts.mem, namespace=facts.namespace, max_new_tokens=8)
    retriever = LoRAMemoryRetriever(memory=facts.mem, namespace=facts.namespace)

    # The default QA prompt (context + query) is answered by the routed module.
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
    response = query(engine, QUESTION, use_async)
    [end] = llm_events
    llm_response = end.response
    assert str(response) == llm_response.message.content
    info = llm_response.additional_kwargs
    assert info["mode"] == "lora" and info["modules"] == [facts.module_id]
    assert info["namespace"] == facts.namespace and info["new_tokens"] >= 1

    # With the question alone as the prompt, the module answers it from its weights; the
    # retrieved nodes stay the response's sources.
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=llm, text_qa_template=PromptTemplate("{query_str}")
    )
    response = query(engine, QUESTION, use_async)
    assert str(response) == "1185"
    assert response.source_nodes[0].node.metadata["memory_tier"] == "parametric"


def test_constructor_and_public_api(facts, facts_store, fresh_ns):  # path=: a local store
    assert pkg.__all__ == ["LoRAMemoryRetriever"]
    by_path = LoRAMemoryRetriever(path=facts_store.mem.path, namespace=facts.namespace)
    assert by_path.memory.path == facts_store.mem.path
    first, *_ = by_path.retrieve(QUESTION)
    assert first.node.metadata["memory_tier"] == "parametric"
    with pytest.raises(InvalidInputError, match="exactly one of memory="):
        LoRAMemoryRetriever(namespace=fresh_ns)
    with pytest.raises(InvalidInputError, match="namespace must be a non-empty str"):
        LoRAMemoryRetriever(memory=facts.mem, namespace="")
    with pytest.raises(InvalidInputError, match="nothing to retrieve"):
        LoRAMemoryRetriever(
            memory=facts.mem, namespace=fresh_ns, include_recall=False, include_buffer=False
        )


def test_pep420_layout():
    root = Path(pkg.__file__).parents[2]
    assert root.name == "llama_index"
    assert not (root / "__init__.py").exists()
    assert not (root / "retrievers" / "__init__.py").exists()
    assert (root / "retrievers" / "lora_memory" / "py.typed").is_file()
