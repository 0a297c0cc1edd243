"""lora-memory for LlamaIndex ``Memory``: a long-term memory block backed by LoRA modules."""

from llama_index.memory.lora_memory.base import LoRAMemoryBlock

__all__ = ["LoRAMemoryBlock"]
