"""``LoRAMemoryChatMessageHistory``: a thin legacy adapter (deprecated, as its base class is)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core._api import deprecated
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from lora_memory_plugin import UnknownNamespaceError
from lora_memory_plugin.integration import MemoryBacked

if TYPE_CHECKING:
    from lora_memory_plugin import LoRAMemory

_ROLE_OF = {HumanMessage: "user", AIMessage: "assistant", SystemMessage: "system"}


@deprecated(
    since="0.1.0",
    removal="1.0.0",
    package="langchain-lora-memory",
    alternative_import="langchain_lora_memory.LoRAMemoryMiddleware",
    addendum=(
        "LangChain deprecated BaseChatMessageHistory (langchain-core 1.6.4); agents built with "
        "create_agent keep short-term memory in a checkpointer and long-term memory in "
        "LoRAMemoryMiddleware / LoRAMemoryStore."
    ),
)
class LoRAMemoryChatMessageHistory(MemoryBacked, BaseChatMessageHistory):
    """The turns of one session of a namespace, for legacy ``RunnableWithMessageHistory`` code.

    Each message is a buffer turn (role user / assistant / system / tool) with
    ``session_id``; ``messages`` returns the session's turns oldest first. The buffer
    deduplicates records by role and text per namespace, so a message identical to an earlier
    one of the namespace (say, a second "yes") is stored once, in the session that said it first.

    Example:
        .. code-block:: python

            from langchain_lora_memory import LoRAMemoryChatMessageHistory

            history = LoRAMemoryChatMessageHistory(
                path="./memory", namespace="user-42", session_id="s1"
            )
            history.add_user_message("My locker code is 4471.")
            history.messages
    """

    def __init__(
        self,
        *,
        namespace: str,
        session_id: str,
        memory: LoRAMemory | None = None,
        path: str | Path | None = None,
    ) -> None:
        if not session_id:
            raise ValueError("session_id must be a non-empty string, e.g. the conversation id")
        super().__init__(memory=memory, path=path)
        self.namespace = namespace
        self.session_id = session_id

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's turns, oldest first."""
        try:
            records = self.memory.get(self.namespace, kind="turn", session_id=self.session_id)
        except UnknownNamespaceError:
            return []
        records.sort(key=lambda r: float(r.metadata.get("created_at", 0.0)))
        return [_message(r.metadata.get("role", "user"), r.text, r.id) for r in records]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Write the messages as turns of this session (one batched write)."""
        now = time.time()
        turns: list[dict[str, Any]] = []
        for i, m in enumerate(messages):
            role = next((r for cls, r in _ROLE_OF.items() if isinstance(m, cls)), None)
            if isinstance(m, ToolMessage):
                role = "tool"
            if role is None:
                raise ValueError(f"cannot store a {type(m).__name__}: use human/ai/system/tool")
            turns.append(
                {
                    "content": m.text,
                    "role": role,
                    "session_id": self.session_id,
                    "created_at": now + i * 1e-6,  # keeps the order of one call
                }
            )
        if turns:
            self.memory.add_turns(self.namespace, turns)

    def clear(self) -> None:
        """Delete the session's turns from the buffer.

        Knowledge a module already consolidated from them stays in that module until the core's
        ``forget`` rebuilds it.
        """
        try:
            ids = [r.id for r in self.memory.get(self.namespace, session_id=self.session_id)]
        except UnknownNamespaceError:
            return
        if ids:
            self.memory.delete(self.namespace, ids)


def _message(role: str, text: str, rid: str) -> BaseMessage:
    if role == "assistant":
        return AIMessage(content=text, id=rid)
    if role == "system":
        return SystemMessage(content=text, id=rid)
    if role == "tool":
        return ToolMessage(content=text, id=rid, tool_call_id=rid)
    return HumanMessage(content=text, id=rid)
