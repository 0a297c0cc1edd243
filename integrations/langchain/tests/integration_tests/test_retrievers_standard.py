"""LangChain's standard retriever suite, on a plain buffer and on a consolidated namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.retrievers import BaseRetriever
from langchain_lora_memory import LoRAMemoryRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

NOTES = [
    "The office opens at 8:00 on weekdays.",
    "Visitors sign in at the front desk.",
    "Parking is in the basement, level -2.",
    "The cafeteria serves lunch from 11:45.",
    "Fire drills are on the first Thursday of each month.",
]


class TestBufferRetrieverStandard(RetrieversIntegrationTests):
    """mode='buffer': semantic search of the buffer."""

    _memory: Any = None

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _store(cls, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> None:
        from lora_memory_plugin import LoRAMemory

        mem = LoRAMemory.open(
            tmp_path_factory.mktemp("std") / "store", base_model=str(tiny_model_dir)
        )
        mem.add_turns("office", [{"content": t} for t in NOTES])
        cls._memory = mem

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return LoRAMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": self._memory, "namespace": "office", "mode": "buffer"}

    @property
    def retriever_query_example(self) -> str:
        return "Where do visitors park?"


class TestHybridRetrieverStandard(RetrieversIntegrationTests):
    """mode='hybrid' on a namespace with a committed module: the recollection takes a place."""

    _memory: Any = None

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _store(cls, consolidated: Any) -> None:
        cls._memory = consolidated

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return LoRAMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": self._memory, "namespace": "boxes", "mode": "hybrid"}

    @property
    def retriever_query_example(self) -> str:
        return "What is the code of box 2?"
