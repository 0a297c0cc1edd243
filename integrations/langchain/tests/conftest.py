"""Shared fixtures: the tiny no-download base models and a store on them come from
``lora_memory_plugin.pytest_plugin`` (``-p`` in pyproject's pytest settings); here, a fresh store
and one store whose namespace ``boxes`` holds a real committed LoRA module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lora_memory_plugin.testing import FACTS, consolidate_facts, one_torch_thread

__all__ = ["FACTS"]


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models' matmuls are too small for two threads: one is faster and steadier."""
    with one_torch_thread():
        yield


@pytest.fixture
def memory(tmp_path: Path, tiny_model_dir: Path, served: Any) -> Any:
    """A fresh store answering with the tiny model: the store itself, and (a second run of each
    test) a RemoteMemory on a memory service over it."""
    from lora_memory_plugin import LoRAMemory

    return served(LoRAMemory.open(tmp_path / "store", base_model=str(tiny_model_dir)))


@pytest.fixture(scope="session")
def consolidated_store(tmp_path_factory: pytest.TempPathFactory, sharp_model_dir: Path) -> Any:
    """A store whose namespace ``boxes`` has the FACTS consolidated into one module."""
    from lora_memory_plugin import LoRAMemory

    mem = LoRAMemory.open(
        tmp_path_factory.mktemp("consolidated") / "store", base_model=str(sharp_model_dir)
    )
    return consolidate_facts(mem, "boxes").mem


@pytest.fixture(scope="session")
def consolidated(consolidated_store: Any, served: Any) -> Any:
    """That store, local and (a second run) through the memory service."""
    return served(consolidated_store)
