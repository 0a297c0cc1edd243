"""lora-memory for LlamaIndex LLMs: a store's base model with its routed LoRA modules."""

from llama_index.llms.lora_memory.base import LoRAMemoryLLM

__all__ = ["LoRAMemoryLLM"]
