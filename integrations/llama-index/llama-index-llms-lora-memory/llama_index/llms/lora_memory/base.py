"""``LoRAMemoryLLM``: a lora-memory store's base model, with its routed LoRA modules, as an LLM.

How it answers:

- ``namespace=None``: the store's base model alone, on the whole conversation (its chat
  template; the store's system prompt when the messages bring none).
- ``namespace="..."``, ``mode="lora"`` (default) or ``"base"``: ``LoRAMemory.chat``: the whole
  conversation, answered with the namespace's module routed from the last user message active
  (``lora``), or by the bare base model; no buffer text is added. When no module matches (or
  the namespace has none yet) the base model answers and the notes say so. In a
  ``RetrieverQueryEngine`` the retrieved context is in the prompt already.
- ``mode="auto"``, ``"hybrid"``, ``"rag"`` or ``"icl"``: ``LoRAMemory.ask`` on the last user
  message (``auto`` picks lora, hybrid or rag per question, as ``ask`` does), with
  buffer records in the prompt (``ask`` takes one question: earlier messages are not sent, and
  the notes count them).

Every response says what answered: ``additional_kwargs`` carry ``mode`` (what answered),
``requested_mode``, ``modules`` (the LoRA module ids used), ``confidence`` (the router's),
``namespace``, ``notes``, ``sources`` (buffer record ids put in the prompt), ``prompt_tokens``,
``new_tokens`` and ``seconds``; ``raw`` holds the core's whole ``Answer`` (with the routing
decision) or, for the base model, the messages it was sent.

Generation is greedy and in-process; streaming yields the whole answer as one chunk once it is
generated (the core generator does not stream tokens yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from lora_memory_plugin import MAX_QUERY_CHARS, Answer, InvalidInputError, LoRAMemory
from lora_memory_plugin.integration import (
    MemoryArg,
    MemoryBacked,
    PathArg,
    message_role,
    message_text,
)

logger = logging.getLogger(__name__)

MODES = ("lora", "base", "auto", "hybrid", "rag", "icl")
# retrieval modes: LoRAMemory.ask on the last user message
ASK_MODES = ("auto", "hybrid", "rag", "icl")
# ask() takes questions up to MAX_QUERY_CHARS characters (~4 per token in English): the
# context window a query engine packs its prompt into must stay under it.
_CHARS_PER_TOKEN = 4


class LoRAMemoryLLM(MemoryBacked, CustomLLM):
    """The base model of a lora-memory store, answering with the namespace's LoRA modules.

    Setup:
        ``pip install llama-index-llms-lora-memory``

    Example:
        >>> from llama_index.llms.lora_memory import LoRAMemoryLLM
        >>> llm = LoRAMemoryLLM(path="./memory", namespace="user-42")  # doctest: +SKIP
        >>> r = llm.complete("What is my locker code?")  # doctest: +SKIP
        >>> r.text, r.additional_kwargs["mode"], r.additional_kwargs["modules"]  # doctest: +SKIP
        ('4471', 'lora', ['m-20250101T000000-ab12'])
        >>> llm.chat([ChatMessage(role="user", content="Hi")])  # doctest: +SKIP

    Args:
        memory: an open ``LoRAMemory``; or
        path: a store directory (opened here). Exactly one of the two.
        namespace: answer with this namespace's modules; None: the base model alone.
        mode: with a namespace, ``lora`` (default) or ``base`` (``LoRAMemory.chat``, the whole
            conversation), or ``hybrid``, ``rag``, ``icl`` (``LoRAMemory.ask``, the last user
            message with buffer records in the prompt).
        max_new_tokens: tokens generated per answer.
    """

    path: str | None = Field(default=None, description="The store directory, when given.")
    namespace: str | None = Field(
        default=None,
        description="Answer with this namespace's LoRA modules; None: the base model alone.",
    )
    mode: str = Field(
        default="lora", description="lora/base: LoRAMemory.chat; hybrid/rag/icl: LoRAMemory.ask."
    )
    max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Tokens per answer.")

    _memory: LoRAMemory = PrivateAttr()
    _keep_path: ClassVar[bool] = True  # path= is also kept in the path field

    def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **kwargs: Any) -> None:
        mode = kwargs.get("mode", "lora")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        super().__init__(memory=memory, path=path, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "LoRAMemoryLLM"

    @property
    def metadata(self) -> LLMMetadata:
        window = int(self._memory.generator().context_window)  # loads the model once
        if self.namespace is not None and self.mode in ASK_MODES:
            window = min(window, MAX_QUERY_CHARS // _CHARS_PER_TOKEN)
        return LLMMetadata(
            context_window=window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self._memory.config.models.base_model,
        )

    # ---- the one place that generates ----------------------------------------------------
    def _answer(
        self, messages: Sequence[ChatMessage]
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(text, summary for additional_kwargs, details for raw)."""
        turns = [{"role": _role(m), "content": message_text(m)} for m in messages]
        if self.namespace is None:
            return self._base(turns)
        if self.mode in ASK_MODES:
            return self._ask(turns)
        a = self._memory.chat(
            self.namespace, turns, mode=self.mode, max_new_tokens=self.max_new_tokens
        )
        return a.text, _summary(a, self.namespace, list(a.notes)), a.to_dict()

    def _base(self, turns: list[dict[str, str]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The base model alone (no namespace to route in)."""
        if not turns or turns[0]["role"] != "system":  # keep the template's default out
            system = self._memory.config.generation.system_prompt
            turns = [{"role": "system", "content": system}, *turns]
        g = self._memory.generator().chat(turns, max_new_tokens=self.max_new_tokens)
        info = {
            "mode": "base",
            "requested_mode": "base",
            "modules": [],
            "confidence": 0.0,
            "namespace": None,
            "notes": [],
            "prompt_tokens": g.prompt_tokens,
            "new_tokens": g.new_tokens,
            "seconds": g.seconds,
            "sources": [],
        }
        return g.text, info, {**info, "messages": turns}

    def _ask(self, turns: list[dict[str, str]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A retrieval mode: ``LoRAMemory.ask`` on the last user message."""
        assert self.namespace is not None
        users = [i for i, t in enumerate(turns) if t["role"] == "user" and t["content"].strip()]
        if not users:
            raise InvalidInputError(
                f"mode={self.mode!r} answers the last user message, and there is none with "
                "text; send at least one user message"
            )
        last = users[-1]
        a = self._memory.ask(
            self.namespace,
            turns[last]["content"],
            mode=self.mode,
            max_new_tokens=self.max_new_tokens,
        )
        notes = list(a.notes)
        skipped = sum(1 for i, t in enumerate(turns) if i != last and t["role"] != "system")
        if skipped:
            notes.append(f"{skipped} earlier message(s) not sent: ask() answers one question")
        return a.text, _summary(a, self.namespace, notes), {**a.to_dict(), "notes": notes}

    def _chat_response(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        text, info, raw = self._answer(messages)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            raw=raw,
            additional_kwargs=info,
        )

    # ---- LlamaIndex LLM interface ----------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat_response, messages)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            r = self._chat_response(messages)
            yield r.model_copy(update={"delta": r.message.content or ""})

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        async def gen() -> ChatResponseAsyncGen:
            r = await asyncio.to_thread(self._chat_response, messages)
            yield r.model_copy(update={"delta": r.message.content or ""})

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return _completion(self._chat_response([_user(prompt)]))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return _completion(await asyncio.to_thread(self._chat_response, [_user(prompt)]))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            r = _completion(self._chat_response([_user(prompt)]))
            yield r.model_copy(update={"delta": r.text})

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def gen() -> CompletionResponseAsyncGen:
            r = _completion(await asyncio.to_thread(self._chat_response, [_user(prompt)]))
            yield r.model_copy(update={"delta": r.text})

        return gen()


def _summary(a: Answer, namespace: str, notes: list[str]) -> dict[str, Any]:
    """What answered, for ``additional_kwargs``."""
    return {
        "mode": a.mode,
        "requested_mode": a.requested_mode,
        "modules": list(a.modules),
        "confidence": a.confidence,
        "namespace": namespace,
        "notes": notes,
        "prompt_tokens": a.context_tokens,
        "new_tokens": a.new_tokens,
        "seconds": a.timings.get("total", 0.0),
        "sources": [h.id for h in a.sources],
    }


def _completion(r: ChatResponse) -> CompletionResponse:
    return CompletionResponse(
        text=r.message.content or "", raw=r.raw, additional_kwargs=r.additional_kwargs
    )


def _user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def _role(message: ChatMessage) -> str:
    """The chat-template role: system, user or assistant (tool and function results read as
    user input)."""
    role = message_role(message.role)
    return "user" if role == "tool" else role
