"""What every class of this package shares: reaching the store, and the recall call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_memory_plugin import LoRAMemory, Recall


def resolve_memory(memory: LoRAMemory | None, path: str | Path | None, owner: str) -> LoRAMemory:
    """The one open :class:`LoRAMemory` a class works on (``LoRAMemory.resolve``)."""
    from lora_memory_plugin import LoRAMemory

    return LoRAMemory.resolve(memory, path, owner=owner)


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
