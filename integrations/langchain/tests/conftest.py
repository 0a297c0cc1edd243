"""Shared fixtures: the tiny no-download base model (lora_memory_plugin.testing), stores opened
on it, and one store whose namespace ``boxes`` holds a real committed LoRA module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lora_memory_plugin.testing import build_tiny_model, sharpen_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FACTS = [
    (f"What is the code of box {i}?", code)
    for i, code in enumerate(["4471", "9302", "1185", "7720"])
]
FAST = {"lr": 1e-2, "rank": 16, "max_steps": 400}


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models' matmuls are too small for two threads: one is faster and steadier."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="session")
def sharp_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its final norm scaled x10, so an adapter can make it confident."""
    return sharpen_model(tiny_model_dir, tmp_path_factory.mktemp("sharp") / "tiny-sharp")


@pytest.fixture
def memory(tmp_path: Path, tiny_model_dir: Path) -> Any:
    """A fresh store answering with the tiny model."""
    from lora_memory_plugin import LoRAMemory

    return LoRAMemory.open(tmp_path / "store", base_model=str(tiny_model_dir))


@pytest.fixture(scope="session")
def consolidated(tmp_path_factory: pytest.TempPathFactory, sharp_model_dir: Path) -> Any:
    """A store whose namespace ``boxes`` has the FACTS consolidated into one module."""
    from lora_memory_plugin import LoRAMemory

    mem = LoRAMemory.open(
        tmp_path_factory.mktemp("consolidated") / "store", base_model=str(sharp_model_dir)
    )
    mem.add_turns("boxes", [{"content": f"Question: {q} Answer: {a}"} for q, a in FACTS])
    [report] = mem.consolidate("boxes", **FAST)
    assert report.status == "consolidated", report
    return mem
