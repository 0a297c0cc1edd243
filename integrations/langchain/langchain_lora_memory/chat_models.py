"""``ChatLoRAMemory``: the store's base model plus its routed LoRA module, as a chat model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from lora_memory_plugin.integration import MemoryArg, MemoryBacked, PathArg

if TYPE_CHECKING:
    from lora_memory_plugin import LoRAMemory


class ChatLoRAMemory(MemoryBacked, BaseChatModel):
    """A local chat model answering from its own parametric memory.

    The store's base model runs in this process (transformers, greedy decoding). In ``lora``
    mode the last user message is routed (``LoRAMemory.route``) to the namespace's best
    consolidated LoRA module, which is active while the whole conversation is answered; when
    no module matches (nothing consolidated, or nothing close enough) the bare base model
    answers and ``response_metadata["modules"]`` is empty. ``base`` mode never uses a module.
    No buffer text is added here: put retrieval in the prompt yourself, or use
    ``LoRAMemoryMiddleware``, which does.

    Messages map to chat roles (system, user, assistant; tool results become user turns).
    Without a system message, the store's configured ``generation.system_prompt`` (the one
    the modules were trained with) is sent. Tool calling is not supported.

    Setup:
        .. code-block:: bash

            pip install -e integrations/langchain   # langchain-lora-memory
            lora-memory models pull                 # the default base model, offline after

    Instantiate and invoke:
        .. code-block:: python

            from langchain_lora_memory import ChatLoRAMemory

            llm = ChatLoRAMemory(path="./memory", namespace="user-42", max_new_tokens=32)
            msg = llm.invoke("What is my locker code?")
            msg.content, msg.response_metadata["modules"]

    Stream, batch, async:
        .. code-block:: python

            for chunk in llm.stream("What is my locker code?"):
                print(chunk.content, end="")
            llm.batch(["question one", "question two"])
            await llm.ainvoke("What is my locker code?")

    ``stream`` yields the answer as one chunk: the in-process generator decodes the whole
    answer in one ``generate`` call (no token streamer).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    namespace: str
    """The namespace whose modules answer."""
    mode: Literal["lora", "base"] = "lora"
    """``lora``: the routed module is active; ``base``: the bare base model."""
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    """Tokens generated per answer."""

    _memory: LoRAMemory = PrivateAttr()

    def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **data: Any) -> None:
        super().__init__(memory=memory, path=path, **data)

    @property
    def _llm_type(self) -> str:
        return "lora-memory"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "base_model": self._memory.config.models.base_model,
            "namespace": self.namespace,
            "mode": self.mode,
            "max_new_tokens": self.max_new_tokens,
        }

    # ---- generation --------------------------------------------------------------------
    def _chat_messages(self, messages: list[BaseMessage]) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for m in messages:
            if isinstance(m, SystemMessage):
                out.append({"role": "system", "content": m.text})
            elif isinstance(m, HumanMessage):
                out.append({"role": "user", "content": m.text})
            elif isinstance(m, AIMessage):
                if m.text.strip():
                    out.append({"role": "assistant", "content": m.text})
            elif isinstance(m, ToolMessage):
                out.append({"role": "user", "content": f"Tool result: {m.text}"})
            else:
                raise ValueError(
                    f"ChatLoRAMemory cannot send a {type(m).__name__}; use system, human, ai or "
                    "tool messages"
                )
        if not out or out[0]["role"] != "system":
            out.insert(
                0, {"role": "system", "content": self._memory.config.generation.system_prompt}
            )
        return out

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        max_new = int(kwargs.get("max_new_tokens", self.max_new_tokens))
        ans = self._memory.chat(
            self.namespace, self._chat_messages(messages), mode=self.mode, max_new_tokens=max_new
        )
        text = _cut(ans.text, stop)
        usage = {
            "input_tokens": ans.context_tokens,
            "output_tokens": ans.new_tokens,
            "total_tokens": ans.context_tokens + ans.new_tokens,
        }
        meta = {
            "modules": list(ans.modules),
            "confidence": ans.confidence,
            "route": (ans.route or {}).get("reason", "; ".join(ans.notes)),
            "mode": ans.mode,
            "seconds": ans.timings.get("total", 0.0),
            "model_name": self._llm_type,
        }
        msg = AIMessage(content=text, response_metadata=meta, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        result = self._generate(messages, stop, run_manager, **kwargs)
        msg = result.generations[0].message
        chunk = ChatGenerationChunk(
            message=AIMessageChunk(
                content=msg.content,
                response_metadata=msg.response_metadata,
                usage_metadata=getattr(msg, "usage_metadata", None),
                chunk_position="last",
            )
        )
        if run_manager is not None:
            run_manager.on_llm_new_token(str(msg.content), chunk=chunk)
        yield chunk


def _cut(text: str, stop: list[str] | None) -> str:
    """``text`` up to the first stop sequence."""
    for s in stop or ():
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text
