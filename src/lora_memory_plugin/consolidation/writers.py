"""Synthetic-data writers: the models that turn buffered records into facts, QA pairs, summaries.

Consolidation trains on what a writer produces (see :mod:`.synth`), so a writer is just "a batch
of chat prompts in, one completion each out". Two implementations:

- :class:`LocalWriter`: the local base model, greedy and without any adapter (a module must not
  write its own training data: it would re-learn its recollections as new facts). No network.
- :class:`LangChainWriter`: any LangChain chat model (OpenAI, vLLM, Ollama, ...), for users who
  want a stronger writer. langchain-core is imported only when one is built, so
  ``import lora_memory_plugin`` never imports it.

Whatever a writer returns passes the grounding check in :mod:`.synth` before it is trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import InvalidInputError, MissingExtraError, ModelError

if TYPE_CHECKING:
    from ..generation.backend import Generator

Messages = list[dict[str, str]]
"""One chat prompt: ``[{"role": "system" | "user" | "assistant", "content": ...}, ...]``."""


@runtime_checkable
class DataWriter(Protocol):
    """Completes a batch of chat prompts, one completion per prompt, in order."""

    name: str

    def write(self, prompts: Sequence[Messages], max_new_tokens: int) -> list[str]: ...


class LocalWriter:
    """The local base model as writer: greedy, bare (no LoRA module active), batched.

    Args:
        generator: a loaded :class:`~lora_memory_plugin.generation.backend.Generator`.
        batch_size: prompts per ``generate`` call.
    """

    def __init__(self, generator: Generator, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        self.generator = generator
        self.batch_size = batch_size
        self.name = f"local:{generator.name}"

    def write(self, prompts: Sequence[Messages], max_new_tokens: int) -> list[str]:
        gens = self.generator.chat_many(list(prompts), max_new_tokens, self.batch_size)
        return [g.text for g in gens]


_LANGCHAIN_FIX = "pip install 'lora-memory-plugin[langchain]'"


class LangChainWriter:
    """A LangChain ``BaseChatModel`` as writer, through ``model.batch``.

    Args:
        model: any LangChain chat model. Configure it for data writing (temperature 0: the
            synthetic data should be reproducible).
        max_tokens_kwarg: the model's own name for a completion-length limit (``"max_tokens"``
            for most providers); when given, ``max_new_tokens`` is bound under that name. None
            (default): the model's configured limit applies, since providers disagree on the name
            and an unknown one is an API error.
        max_concurrency: requests in flight during a batch (None: LangChain's default).

    Raises:
        MissingExtraError: langchain-core is not installed.
    """

    def __init__(
        self,
        model: Any,
        max_tokens_kwarg: str | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        try:
            # langchain-core: an optional extra, imported when a writer is built
            from langchain_core.language_models import BaseChatModel  # noqa: PLC0415
        except ImportError as e:
            raise MissingExtraError(
                f"LangChainWriter needs langchain-core: {_LANGCHAIN_FIX}"
            ) from e
        if not isinstance(model, BaseChatModel):
            raise InvalidInputError(
                f"LangChainWriter needs a LangChain BaseChatModel, got {type(model).__name__}"
            )
        if max_concurrency is not None and max_concurrency < 1:
            raise InvalidInputError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.model: Any = model  # typed loosely: langchain-core is an optional extra
        self.max_tokens_kwarg = max_tokens_kwarg
        self.max_concurrency = max_concurrency
        self.name = f"langchain:{_model_name(model)}"

    def write(self, prompts: Sequence[Messages], max_new_tokens: int) -> list[str]:
        if not prompts:
            return []
        inputs = [to_langchain_messages(p) for p in prompts]
        model = self.model
        if self.max_tokens_kwarg:
            model = model.bind(**{self.max_tokens_kwarg: max_new_tokens})
        config: dict[str, Any] = {}
        if self.max_concurrency is not None:
            config["max_concurrency"] = self.max_concurrency
        try:
            outputs = model.batch(inputs, config=config or None)
        except Exception as e:  # provider errors have no common base class
            raise ModelError(f"writer {self.name} failed: {type(e).__name__}: {e}") from e
        return [message_text(m) for m in outputs]


def to_langchain_messages(messages: Messages) -> list[Any]:
    """Our ``{"role", "content"}`` dicts -> LangChain System/Human/AI messages."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: PLC0415

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    out = []
    for m in messages:
        kind = kinds.get(m.get("role", ""))
        if kind is None:
            raise InvalidInputError(
                f"writer prompts use roles system/user/assistant, got {m.get('role')!r}"
            )
        out.append(kind(content=m["content"]))
    return out


def message_text(message: Any) -> str:
    """The text of a chat model's reply: string content, or the text blocks of list content."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content.strip()
    text = getattr(message, "text", None)  # langchain-core 1.x: a property joining text blocks
    if isinstance(text, str):
        return text.strip()
    parts = [
        b if isinstance(b, str) else str(b.get("text", ""))
        for b in content or ()
        if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text")
    ]
    return "".join(parts).strip()


def _model_name(model: Any) -> str:
    """A readable name for stats and errors: the provider's model id when it exposes one."""
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__
