"""LangChain / LangGraph integration of lora-memory.

- :class:`LoRAMemoryRetriever`: buffer hits and the parametric recollection as Documents.
- :class:`LoRAMemoryStore`: a LangGraph ``BaseStore`` (``create_agent(..., store=...)``, LangMem).
- :class:`LoRAMemoryMiddleware`: recall into the system message, write turns after the agent.
- :class:`ChatLoRAMemory`: the base model plus the routed LoRA module as a chat model.
- :class:`LoRAMemoryChatMessageHistory`: legacy chat history (deprecated upstream).
"""

from __future__ import annotations

from importlib import metadata

from langchain_lora_memory.chat_message_histories import LoRAMemoryChatMessageHistory
from langchain_lora_memory.chat_models import ChatLoRAMemory
from langchain_lora_memory.middleware import LoRAMemoryMiddleware
from langchain_lora_memory.retrievers import LoRAMemoryRetriever
from langchain_lora_memory.stores import LoRAMemoryStore

try:
    __version__ = metadata.version("langchain-lora-memory")
except metadata.PackageNotFoundError:  # pragma: no cover - not installed
    __version__ = ""

__all__ = [
    "ChatLoRAMemory",
    "LoRAMemoryChatMessageHistory",
    "LoRAMemoryMiddleware",
    "LoRAMemoryRetriever",
    "LoRAMemoryStore",
    "__version__",
]
