"""The recall call the retriever makes (the store itself: ``lora_memory_plugin.integration``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_memory_plugin import LoRAMemory, Recall


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
