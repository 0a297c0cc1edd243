"""``LoRAMemoryBlock``: lora-memory as a long-term block of LlamaIndex's ``Memory``.

``Memory`` keeps recent messages in its chat store (short-term memory) and, once they exceed its
token budget, flushes the oldest ones to every memory block's ``aput``. This block writes them to
the lora-memory buffer, where they are searchable at once and later consolidated into LoRA
modules by ``lora-memory consolidate``. On ``aget`` it answers the latest messages with what the
store recalls: the consolidated modules' recollection first, then the closest buffer records.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Any, ClassVar

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory import BaseMemoryBlock
from llama_index.core.utils import get_tokenizer

from lora_memory_plugin import MAX_QUERY_CHARS, Hit, LoRAMemory, Recall, UnknownNamespaceError
from lora_memory_plugin.integration import (
    MemoryArg,
    MemoryBacked,
    PathArg,
    check_namespace,
    format_record,
    message_role,
    message_text,
)

logger = logging.getLogger(__name__)

RECALL_PREFIX = "Recalled:"
NOTES_HEADER = "Notes:"


class LoRAMemoryBlock(MemoryBacked, BaseMemoryBlock[str]):
    """A LlamaIndex memory block backed by a lora-memory store (buffer + LoRA modules).

    Messages that ``Memory`` flushes from its short-term queue are written to the buffer as
    turns; ``aget`` returns, for the latest messages, the parametric recollection of the
    consolidated modules (``LoRAMemory.recall``) followed by the closest buffer records
    (``LoRAMemory.search``), as one text block. The namespace is ``namespace`` when set, else
    the ``Memory``'s ``session_id`` (one namespace per conversation).

    Setup:
        ``pip install llama-index-memory-lora-memory``

    Example:
        >>> from llama_index.core.memory import Memory
        >>> from llama_index.memory.lora_memory import LoRAMemoryBlock
        >>> block = LoRAMemoryBlock(path="./memory", namespace="user-42")  # doctest: +SKIP
        >>> memory = Memory.from_defaults(
        ...     session_id="s1", token_limit=4000, memory_blocks=[block]
        ... )  # doctest: +SKIP
        >>> memory.put_messages(messages)  # doctest: +SKIP
        >>> memory.get(input="What is my locker code?")  # doctest: +SKIP
        [ChatMessage(role='system', ... '<lora_memory>Recalled: 4471 ...'), ...]

    Truncation: when ``Memory`` must shrink the blocks (only blocks with ``priority`` > 0 are
    truncated), the lowest-scored buffer notes go first and the recollection last.
    """

    name: str = Field(default="lora_memory", description="The name of the memory block.")
    path: str | None = Field(
        default=None, description="The store directory (when opened from a path)."
    )
    namespace: str | None = Field(
        default=None,
        description="The lora-memory namespace; None uses the Memory's session_id.",
    )
    similarity_top_k: int = Field(default=3, ge=1, description="Buffer records to return.")
    retrieval_context_window: int = Field(
        default=1,
        ge=1,
        description="How many of the latest messages make the query (1: the latest only).",
    )
    include_recall: bool = Field(
        default=True, description="Include the consolidated modules' recollection."
    )
    include_buffer: bool = Field(default=True, description="Include buffer search hits.")
    min_score: float | None = Field(
        default=None,
        description="Buffer hits below this cosine similarity are left out; None uses the "
        "store's generation.rag_min_score.",
    )
    min_confidence: float = Field(
        default=0.0, description="A recollection below this routing confidence is left out."
    )

    _memory: LoRAMemory = PrivateAttr()
    _keep_path: ClassVar[bool] = True  # path= is also kept in the path field

    def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **data: Any) -> None:
        super().__init__(memory=memory, path=path, **data)

    # ---- writes: messages flushed from short-term memory -------------------------------
    async def aput(
        self,
        messages: list[ChatMessage],
        from_short_term_memory: bool = False,
        session_id: str | None = None,
    ) -> None:
        """Write ``messages`` to the namespace of ``session_id`` (the ``Memory``'s own, when it
        flushes) or the block's ``namespace``. A message's ``additional_kwargs`` never choose
        it: they travel with message content, which callers and tools control."""
        if from_short_term_memory and not self.accept_short_term_memory:
            return
        await self._write(messages, session_id if isinstance(session_id, str) else None)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        await self._write(messages, None)  # no session given: the block's namespace only

    async def _write(self, messages: list[ChatMessage], session_id: str | None) -> None:
        sid = session_id or None
        ns = self._namespace_for(sid)
        limit = self._memory.config.buffer.max_turn_chars
        turns: list[dict[str, Any]] = []
        long_texts: list[tuple[str, str]] = []
        for message in messages:
            text = message_text(message)
            if not text.strip():
                continue  # e.g. a tool call with no text: nothing to remember
            role = message_role(message.role)
            if len(text) > limit:  # a long tool output or pasted file: chunked as a document
                long_texts.append((text, role))
                continue
            turns.append({"content": text, "role": role, "session_id": sid})
        if turns:
            await self._memory.aadd_turns(ns, turns)
        for text, role in long_texts:
            await self._memory.aadd_document(ns, text, source=f"llama_index:{role}", session_id=sid)

    # ---- reads: recollection + buffer hits for the latest messages ---------------------
    async def _aget(
        self,
        messages: list[ChatMessage] | None = None,
        session_id: str | None = None,
        **block_kwargs: Any,
    ) -> str:
        if not messages:
            return ""
        window = messages[-self.retrieval_context_window :]
        query = "\n".join(t for t in (message_text(m).strip() for m in window) if t)
        if not query:
            return ""
        query = query[-MAX_QUERY_CHARS:]  # the latest text matters most
        ns = self._namespace_for(session_id)
        mem = self._memory
        try:
            recall, hits = await asyncio.gather(
                mem.arecall(ns, query) if self.include_recall else _none(),
                mem.asearch(ns, query, k=self.similarity_top_k) if self.include_buffer else _none(),
            )
        except UnknownNamespaceError:
            return ""  # nothing written to this namespace yet
        min_score = self.min_score
        if min_score is None:
            min_score = mem.config.generation.rag_min_score
        kept = [h for h in hits or [] if h.score >= min_score]
        return format_memory(recall if self.include_recall else None, kept, self.min_confidence)

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Drop whole lines from the end (lowest-scored notes first, the recollection last)."""
        count = get_tokenizer()
        lines = content.split("\n")
        saved = 0
        while lines and saved < tokens_to_truncate:
            saved += len(count(lines.pop())) + 1
        if lines and lines[-1] == NOTES_HEADER:
            lines.pop()
        return "\n".join(lines) or None

    def _namespace_for(self, session_id: str | None) -> str:
        return check_namespace(
            self.namespace or session_id,
            "LoRAMemoryBlock needs a namespace: set namespace=... on the block, or use it "
            "inside a Memory (whose session_id is used), or pass session_id=",
        )


def format_memory(recall: Recall | None, hits: list[Hit], min_confidence: float = 0.0) -> str:
    """The block's text: one ``Recalled:`` line, then one ``- ...`` line per buffer hit.

    Stored and recalled text is data users control: each line is escaped (``&``, ``<``, ``>``),
    so a stored ``</lora_memory>`` cannot close the block inside the system message.
    """
    lines = []
    if recall is not None and recall.text.strip() and recall.confidence >= min_confidence:
        lines.append(f"{RECALL_PREFIX} {_escape(' '.join(recall.text.split()))}")
    if hits:
        lines.append(NOTES_HEADER)
        lines.extend(_escape(format_record(h)) for h in hits)  # one line each
    return "\n".join(lines)


def _escape(line: str) -> str:
    return html.escape(line, quote=False)


async def _none() -> None:
    return None
