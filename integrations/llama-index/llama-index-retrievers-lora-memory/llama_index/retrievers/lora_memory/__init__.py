"""lora-memory for LlamaIndex retrieval: buffer hits and LoRA-module recollection as nodes."""

from llama_index.retrievers.lora_memory.base import LoRAMemoryRetriever

__all__ = ["LoRAMemoryRetriever"]
