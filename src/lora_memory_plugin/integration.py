"""What every framework integration of lora-memory builds on (LangChain, LlamaIndex, ...).

The integrations are separate distributions: they do not import each other, and from this
package they import only its public surface (``lora_memory_plugin``, ``lora_memory_plugin.types``,
``lora_memory_plugin.errors`` and this module). What they share, free of any framework, is here:

- :class:`MemoryBacked`: the base of a class that works on one store, reached with ``memory=``
  (an open :class:`~lora_memory_plugin.LoRAMemory`) or ``path=`` (a store directory);
- :func:`resolve_memory`: that rule alone (exactly one of the two);
- :func:`check_namespace`: a namespace given to an integration is a non-empty ``str``;
- :func:`message_text` and :func:`message_role`: a framework chat message's text and the role a
  buffer turn of it gets;
- :func:`format_record`: a buffer hit as one line of an agent's memory block.

Importing this module is cheap: :class:`~lora_memory_plugin.LoRAMemory` (and with it torch and
chromadb) loads when a store is first resolved.

Example:
    .. code-block:: python

        from lora_memory_plugin.integration import MemoryBacked, check_namespace

        class MyRetriever(MemoryBacked, FrameworkRetriever):  # MemoryBacked first
            def __init__(self, *, memory=None, path=None, namespace, k=4):
                self.namespace = check_namespace(namespace)
                self.k = k
                super().__init__(memory=memory, path=path)  # then FrameworkRetriever()

        MyRetriever(path="./memory", namespace="user-42").memory.search("user-42", "locker")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from .errors import InvalidInputError, InvalidTypeError
from .generation.prompts import format_record

if TYPE_CHECKING:
    from .memory import LoRAMemory
    from .remote import RemoteMemory

__all__ = [
    "BUFFER_ROLES",
    "Memory",
    "MemoryArg",
    "MemoryBacked",
    "PathArg",
    "check_namespace",
    "format_record",
    "message_role",
    "message_text",
    "resolve_memory",
]

#: The memory an integration works on: a local store or a memory service's client (the same
#: methods, result types and errors).
Memory: TypeAlias = "LoRAMemory | RemoteMemory"
#: What ``memory=`` takes: a :data:`Memory`, or None (then ``path=`` names a store).
MemoryArg: TypeAlias = "LoRAMemory | RemoteMemory | None"
#: What ``path=`` takes: a store directory, or None (then ``memory=`` is the store).
PathArg: TypeAlias = "str | Path | None"

#: The roles a buffer turn has; :func:`message_role` maps every framework role onto one of them.
BUFFER_ROLES: tuple[str, ...] = ("user", "assistant", "system", "tool")

# Framework role names (LlamaIndex's MessageRole values, LangChain's message types, OpenAI's
# roles) -> buffer roles. Any other role reads as input to the model: "user".
_ROLE_OF: dict[str, str] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


def resolve_memory(memory: MemoryArg, path: PathArg, *, owner: str = "") -> Memory:
    """The one store a class works on: ``memory`` (an open store or a service client) or
    ``path`` (a store opened here).

    Args:
        memory: an open :class:`~lora_memory_plugin.LoRAMemory`, a
            :class:`~lora_memory_plugin.remote.RemoteMemory`, or None.
        path: a store directory, or None; exactly one of ``memory`` and ``path`` is given.
        owner: the class asking (its name prefixes the error messages).

    Raises:
        InvalidInputError: both or neither were given.
        InvalidTypeError: ``memory`` is neither a ``LoRAMemory`` nor a ``RemoteMemory``.
    """
    from .memory import LoRAMemory  # noqa: PLC0415 (keeps this module import light)
    from .remote import RemoteMemory  # noqa: PLC0415

    who = f"{owner}: " if owner else ""
    if memory is not None and path is not None:
        raise InvalidInputError(
            f"{who}pass exactly one of memory= (an open LoRAMemory) or path= (a store "
            "directory), not both; got both"
        )
    if path is not None:
        return LoRAMemory.open(path)
    if memory is None:
        raise InvalidInputError(
            f"{who}pass memory= (an open LoRAMemory) or path= (a store directory, e.g. "
            "'./memory'): exactly one of memory= or path= is needed, got neither"
        )
    if not isinstance(memory, (LoRAMemory, RemoteMemory)):
        raise InvalidTypeError(
            f"{who}memory= must be a LoRAMemory or a RemoteMemory, got "
            f"{type(memory).__name__}; open one with LoRAMemory.open(path), or connect to a "
            "service with RemoteMemory(url, api_key=...)"
        )
    return memory


def check_namespace(namespace: object, message: str | None = None) -> str:
    """``namespace``, when it is a non-empty ``str``.

    Only the type and emptiness are checked here; the store applies its own rules (length,
    characters) when the namespace is used.

    Args:
        namespace: what was given (or found) as the namespace.
        message: the error message, when the caller has a better one than the default
            (e.g. naming where the namespace should have come from).

    Raises:
        InvalidInputError: ``namespace`` is not a non-empty ``str``.
    """
    if not isinstance(namespace, str) or not namespace:
        raise InvalidInputError(message or f"namespace must be a non-empty str, got {namespace!r}")
    return namespace


def message_text(message: object) -> str:
    """The text of a chat message, images, audio and tool calls left out.

    ``message`` is a framework's chat message: one with ``blocks`` (LlamaIndex's ``ChatMessage``)
    or with ``content`` (LangChain's ``BaseMessage``; a mapping's ``"content"``: OpenAI's
    message dicts); or such content itself: a ``str`` (the text as is) or a sequence of content
    blocks, whose text blocks are joined by newlines, in order. A block is text when it is a
    ``str``, a mapping with ``"type": "text"`` and a ``"text"`` (LangChain's and OpenAI's content
    blocks), or an object whose ``block_type`` is ``"text"`` and which has a ``text``
    (LlamaIndex's ``TextBlock``).

    Raises:
        InvalidTypeError: ``message`` is none of these.
    """
    if isinstance(message, Mapping):
        content = message.get("content", "")
    else:
        content = getattr(message, "blocks", None)
        if content is None:
            content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, (bytes, bytearray)) or not isinstance(content, Iterable):
        raise InvalidTypeError(
            f"expected a chat message, a str or a sequence of content blocks, got "
            f"{type(message).__name__}"
        )
    texts: list[str] = []
    for block in content:
        if isinstance(block, Mapping):
            text = block.get("text") if block.get("type") == "text" else None
        elif isinstance(block, str):
            text = block
        else:
            is_text = getattr(block, "block_type", None) == "text"
            text = getattr(block, "text", None) if is_text else None
        if isinstance(text, str):
            texts.append(text)
    return "\n".join(texts)


def message_role(role: object) -> str:
    """The role (one of :data:`BUFFER_ROLES`) a buffer turn of a framework's message gets.

    ``role`` is a role name or an enum member holding one (its ``value``): ``developer`` is
    ``system``; ``ai``, ``chatbot`` and ``model`` are ``assistant``; ``human`` is ``user``;
    ``function`` is ``tool``; any role not known here reads as ``user`` (input to the model).
    """
    return _ROLE_OF.get(str(getattr(role, "value", role)), "user")


class MemoryBacked:
    """Base of an integration class that works on one store: ``memory=`` or ``path=``.

    Put it first among the bases, before the framework's own. Its ``__init__`` takes
    ``memory=`` (an open :class:`~lora_memory_plugin.LoRAMemory`, or a
    :class:`~lora_memory_plugin.remote.RemoteMemory` for a memory service) or ``path=`` (a store
    directory, opened here), exactly one, as keyword arguments; it passes every other keyword
    argument on to the next base's ``__init__`` (the framework's), then resolves the store
    (:func:`resolve_memory`, the class name prefixing its errors), which :attr:`memory` returns.

    A subclass with arguments of its own checks them and calls
    ``super().__init__(memory=memory, path=path, **framework_kwargs)``. A pydantic model (the
    framework's base is one) declares the private attribute and its own ``__init__``, even when
    it only passes its arguments on: type checkers type a pydantic model's constructor from its
    fields unless the class itself defines ``__init__``::

        _memory: Memory = PrivateAttr()

        def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **data: Any) -> None:
            super().__init__(memory=memory, path=path, **data)

    A model that keeps ``path`` as a field too (so that it is serialized with the model) sets
    ``_keep_path = True``: ``path`` is then also passed on, as a ``str`` (None when not given).
    """

    _memory: Memory
    _keep_path: ClassVar[bool] = False

    def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **kwargs: Any) -> None:
        if self._keep_path:
            kwargs["path"] = str(path) if path is not None else None
        super().__init__(**kwargs)
        self._memory = resolve_memory(memory, path, owner=type(self).__name__)

    @property
    def memory(self) -> Memory:
        """The lora-memory store (or service) this object works on."""
        return self._memory
