"""ChatLoRAMemory answers with the routed module: invoke, ainvoke, stream, batch."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_lora_memory import ChatLoRAMemory

from ..conftest import FACTS


def test_invoke_routes_to_the_module(consolidated: Any) -> None:
    llm = ChatLoRAMemory(memory=consolidated, namespace="boxes", max_new_tokens=6)
    [module] = consolidated.modules("boxes")
    msg = llm.invoke(FACTS[2][0])
    assert isinstance(msg, AIMessage) and FACTS[2][1] in msg.text
    assert msg.response_metadata["modules"] == [module.module_id]
    assert 0.0 < msg.response_metadata["confidence"] <= 1.0
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    base = ChatLoRAMemory(memory=consolidated, namespace="boxes", mode="base", max_new_tokens=6)
    assert base.invoke(FACTS[2][0]).response_metadata["modules"] == []


async def test_ainvoke_stream_and_batch(consolidated: Any) -> None:
    llm = ChatLoRAMemory(memory=consolidated, namespace="boxes", max_new_tokens=6)
    msg = await llm.ainvoke(
        [SystemMessage(consolidated.config.generation.system_prompt), HumanMessage(FACTS[0][0])]
    )
    assert FACTS[0][1] in msg.text
    chunks = list(llm.stream(FACTS[1][0]))
    assert len(chunks) == 1 and FACTS[1][1] in chunks[0].text
    answers = llm.batch([FACTS[i][0] for i in range(4)])
    assert [FACTS[i][1] in answers[i].text for i in range(4)] == [True] * 4


def test_unknown_namespace_answers_with_the_base_model(memory: Any) -> None:
    llm = ChatLoRAMemory(memory=memory, namespace="nobody", max_new_tokens=4)
    msg = llm.invoke("hello", stop=["\n"])
    assert msg.response_metadata["modules"] == [] and "\n" not in msg.text
