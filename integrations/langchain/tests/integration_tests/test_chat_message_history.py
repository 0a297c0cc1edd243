"""The legacy history adapter: deprecated, but it stores and reads a session's turns."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_lora_memory import LoRAMemoryChatMessageHistory

_constructed: list[bool] = []


def test_history_round_trip_clear_and_deprecation(memory: Any) -> None:
    # LangChain warns once per class and process: the first construction here says it
    first = not _constructed
    _constructed.append(True)
    with (
        pytest.warns(DeprecationWarning, match="LoRAMemoryChatMessageHistory")
        if first
        else (contextlib.nullcontext())
    ):
        history = LoRAMemoryChatMessageHistory(memory=memory, namespace="u", session_id="s1")
    other = LoRAMemoryChatMessageHistory(memory=memory, namespace="u", session_id="s2")
    assert history.messages == []
    history.add_messages([HumanMessage("My locker code is 4471."), AIMessage("Noted.")])
    history.add_user_message("And my desk is B-104.")
    other.add_user_message("Another session.")
    got = [(type(m).__name__, m.text) for m in history.messages]
    assert got == [
        ("HumanMessage", "My locker code is 4471."),
        ("AIMessage", "Noted."),
        ("HumanMessage", "And my desk is B-104."),
    ]
    history.clear()
    assert history.messages == []
    assert [m.text for m in other.messages] == ["Another session."]
