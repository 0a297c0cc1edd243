"""What the retriever returns in each mode, sync and async."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_lora_memory import LoRAMemoryRetriever

from ..conftest import FACTS


@pytest.mark.parametrize("use_async", [False, True])
async def test_hybrid_puts_the_recollection_first(consolidated: Any, use_async: bool) -> None:
    r = LoRAMemoryRetriever(memory=consolidated, namespace="boxes", k=3)
    q = FACTS[2][0]
    docs = await r.ainvoke(q) if use_async else r.invoke(q)
    assert len(docs) == 3
    first, rest = docs[0], docs[1:]
    assert first.metadata["memory"] == "parametric"
    [module] = consolidated.modules("boxes")
    assert first.metadata["modules"] == [module.module_id]
    assert 0.0 < first.metadata["confidence"] <= 1.0
    assert FACTS[2][1] in first.page_content
    assert all(d.metadata["memory"] == "buffer" for d in rest)
    assert all(isinstance(d.metadata["score"], float) and d.id for d in rest)
    assert rest[0].metadata["score"] >= rest[1].metadata["score"]
    assert rest[0].metadata["kind"] == "turn" and rest[0].metadata["status"] == "consolidated"


@pytest.mark.parametrize("use_async", [False, True])
async def test_parametric_and_buffer_modes(consolidated: Any, use_async: bool) -> None:
    r = LoRAMemoryRetriever(memory=consolidated, namespace="boxes", k=4)
    q = FACTS[0][0]
    call = r.ainvoke if use_async else None
    par = await call(q, mode="parametric") if call else r.invoke(q, mode="parametric")
    buf = await call(q, mode="buffer") if call else r.invoke(q, mode="buffer")
    assert [d.metadata["memory"] for d in par] == ["parametric"]
    assert FACTS[0][1] in par[0].page_content
    assert len(buf) == 4 and all(d.metadata["memory"] == "buffer" for d in buf)
    assert buf[0].page_content == f"Question: {FACTS[0][0]} Answer: {FACTS[0][1]}"


async def test_nothing_consolidated_and_unknown_namespace(memory: Any) -> None:
    memory.add_turn("fresh", "My locker code is 4471.", session_id="s1")
    r = LoRAMemoryRetriever(memory=memory, namespace="fresh", k=2)
    docs = r.invoke("locker code")
    assert [d.metadata["memory"] for d in docs] == ["buffer"]  # no module: no recollection
    assert r.invoke("locker code", mode="parametric") == []
    assert LoRAMemoryRetriever(memory=memory, namespace="nobody").invoke("x") == []
    assert await LoRAMemoryRetriever(memory=memory, namespace="nobody").ainvoke("x") == []


def test_filters_pass_through(memory: Any) -> None:
    memory.add_turn("ns", "Lunch is at noon.", session_id="a")
    memory.add_turn("ns", "Lunch is at one.", session_id="b")
    r = LoRAMemoryRetriever(memory=memory, namespace="ns", mode="buffer", k=5)
    docs = r.invoke("lunch", session_id="b")
    assert [d.page_content for d in docs] == ["Lunch is at one."]
    with pytest.raises(ValueError, match="unknown retriever arguments"):
        r.invoke("lunch", colour="red")
