"""What every class of this package shares: reaching the store, and the recall call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_memory_plugin import LoRAMemory, Recall


def resolve_memory(memory: LoRAMemory | None, path: str | Path | None, owner: str) -> LoRAMemory:
    """The one open :class:`LoRAMemory` a class works on: ``memory=`` or ``path=``, not both.

    Raises:
        ValueError: both or neither were given (the message names them).
        TypeError: ``memory`` is not a LoRAMemory.
    """
    from lora_memory_plugin import LoRAMemory

    if memory is not None and path is not None:
        raise ValueError(
            f"{owner}: pass either memory= (an open LoRAMemory) or path= (a store directory), "
            f"not both; got memory={memory!r} and path={str(path)!r}"
        )
    if memory is None and path is None:
        raise ValueError(
            f"{owner}: pass memory= (an open LoRAMemory) or path= (a store directory), "
            "e.g. path='./memory'"
        )
    if memory is not None:
        if not isinstance(memory, LoRAMemory):
            raise TypeError(
                f"{owner}: memory must be a lora_memory_plugin.LoRAMemory, "
                f"got {type(memory).__name__}; open one with LoRAMemory.open(path)"
            )
        return memory
    return LoRAMemory.open(Path(str(path)))


def recall(memory: LoRAMemory, namespace: str, query: str) -> Recall:
    """The parametric memory's recollection (``LoRAMemory.recall``)."""
    fn = getattr(memory, "recall", None)
    if fn is None:  # pragma: no cover - depends on the installed core
        raise NotImplementedError(
            "this lora-memory core has no LoRAMemory.recall(); upgrade lora-memory-plugin"
        )
    result: Recall = fn(namespace, query)
    return result


async def arecall(memory: LoRAMemory, namespace: str, query: str) -> Recall:
    """Async twin of :func:`recall` (``LoRAMemory.arecall``)."""
    fn: Any = getattr(memory, "arecall", None)
    if fn is None:  # pragma: no cover - depends on the installed core
        raise NotImplementedError(
            "this lora-memory core has no LoRAMemory.arecall(); upgrade lora-memory-plugin"
        )
    result: Recall = await fn(namespace, query)
    return result
