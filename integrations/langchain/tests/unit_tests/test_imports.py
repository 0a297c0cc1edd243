from __future__ import annotations

import langchain_lora_memory

EXPECTED_ALL = [
    "ChatLoRAMemory",
    "LoRAMemoryChatMessageHistory",
    "LoRAMemoryMiddleware",
    "LoRAMemoryRetriever",
    "LoRAMemoryStore",
    "__version__",
]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(langchain_lora_memory.__all__)
    for name in EXPECTED_ALL:
        assert hasattr(langchain_lora_memory, name), name
