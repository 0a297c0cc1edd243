"""create_agent with our middleware and store. The agent's model is a scripted fake chat model:
the things under test are the middleware (what reaches the model, what gets written) and the
store (LangMem's memory tools writing and searching through it)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_lora_memory import LoRAMemoryMiddleware, LoRAMemoryStore
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from ..conftest import FACTS


class ScriptedModel(GenericFakeChatModel):
    """Replies from a script and keeps every prompt it was sent."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(list(messages))
        return super()._generate(messages, *args, **kwargs)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def _model(*replies: AIMessage) -> ScriptedModel:
    return ScriptedModel(messages=iter(replies))


@pytest.mark.parametrize("use_async", [False, True])
async def test_middleware_injects_the_recollection(consolidated: Any, use_async: bool) -> None:
    model = _model(AIMessage(content="It is 1185."))
    mw = LoRAMemoryMiddleware(memory=consolidated, write_roles=())  # read-only here
    agent = create_agent(model, middleware=[mw], system_prompt="You are a helpful assistant.")
    inp = {"messages": [("user", FACTS[2][0])]}
    ctx = {"user_id": "boxes"}
    out = await agent.ainvoke(inp, context=ctx) if use_async else agent.invoke(inp, context=ctx)
    [prompt] = model.prompts
    system = prompt[0]
    assert system.type == "system" and system.text.startswith("You are a helpful assistant.")
    assert "<memory>" in system.text and f"- (recalled) {FACTS[2][1]}" in system.text
    recalled = out["lora_memory_recalled"]
    [module] = consolidated.modules("boxes")
    assert recalled[0]["metadata"]["modules"] == [module.module_id]
    assert all(r["metadata"]["memory"] == "buffer" for r in recalled[1:])


@pytest.mark.parametrize("use_async", [False, True])
async def test_middleware_writes_only_the_new_turns(memory: Any, use_async: bool) -> None:
    model = _model(AIMessage(content="Noted, 4471."), AIMessage(content="It is 4471."))
    mw = LoRAMemoryMiddleware(memory=memory)
    agent = create_agent(model, middleware=[mw], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t1"}}
    ctx = {"user_id": "dana"}

    async def say(text: str) -> Any:
        inp = {"messages": [("user", text)]}
        if use_async:
            return await agent.ainvoke(inp, cfg, context=ctx)
        return agent.invoke(inp, cfg, context=ctx)

    await say("My locker code is 4471.")
    first = memory.get("dana", session_id="t1")
    assert sorted((r.metadata["role"], r.text) for r in first) == [
        ("assistant", "Noted, 4471."),
        ("user", "My locker code is 4471."),
    ]
    out = await say("What is my locker code?")
    assert memory.count("dana") == 4  # two new turns; the first two were not written again
    assert out["lora_memory_recalled"][0]["page_content"] == "My locker code is 4471."
    assert "(user) My locker code is 4471." in model.prompts[1][0].text


def test_langmem_tools_write_and_search_through_the_store(memory: Any) -> None:
    from langmem import create_manage_memory_tool, create_search_memory_tool

    store = LoRAMemoryStore(memory=memory, index_fields=["content"])
    ns = ("memories", "{langgraph_user_id}")
    tools = [create_manage_memory_tool(namespace=ns), create_search_memory_tool(namespace=ns)]
    call = {"name": "manage_memory", "args": {"content": "Locker code is 4471."}, "id": "c1"}
    find = {"name": "search_memory", "args": {"query": "locker"}, "id": "c2"}
    model = _model(
        AIMessage(content="", tool_calls=[call]),
        AIMessage(content="Saved."),
        AIMessage(content="", tool_calls=[find]),
        AIMessage(content="It is 4471."),
    )
    agent = create_agent(model, tools=tools, store=store)
    cfg = {"configurable": {"langgraph_user_id": "u42"}}
    agent.invoke({"messages": [("user", "Remember: my locker code is 4471.")]}, cfg)
    [item] = store.search(("memories", "u42"))
    assert item.value == {"content": "Locker code is 4471."}
    [rec] = memory.get("memories/u42")
    assert rec.text == "Locker code is 4471." and rec.metadata["role"] == "user"
    out = agent.invoke({"messages": [("user", "What is my locker code?")]}, cfg)
    tool_msg = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert "Locker code is 4471." in tool_msg.text and item.key in tool_msg.text
