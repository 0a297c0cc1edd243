"""Fixtures shared by the llama-index-*-lora-memory test suites.

Everything is offline and real: the tiny Llama from ``lora_memory_plugin.testing`` (built from a
config, no download), the real MiniLM embedder, embedded Chroma, and one namespace ("facts")
consolidated into a committed LoRA module once per session. llama-index-core ships the NLTK data
and tiktoken files it needs (``llama_index/core/_static``), so nothing is fetched at run time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lora_memory_plugin.testing import build_tiny_model, sharpen_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The store's user turns; consolidation trains them into one module that answers the questions.
FACTS = [
    (f"What is the code of box {i}?", code)
    for i, code in enumerate(["4471", "9302", "1185", "7720"])
]
FAST = {"lr": 1e-2, "rank": 16, "max_steps": 400}  # the tiny model learns these in seconds


@dataclass(frozen=True)
class Facts:
    """The session's consolidated store: ``mem``, its namespace and its one module id."""

    mem: object
    namespace: str
    module_id: str
    record_ids: tuple[str, ...]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models' matmuls are too small for two threads: one is faster and steadier."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sharp_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny = build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")
    return sharpen_model(tiny, tmp_path_factory.mktemp("sharp") / "tiny-sharp")


@pytest.fixture(scope="session")
def facts(tmp_path_factory: pytest.TempPathFactory, sharp_model_dir: Path) -> Facts:
    """A store whose "facts" namespace holds FACTS, consolidated into one committed module."""
    import torch

    from lora_memory_plugin import LoRAMemory

    mem = LoRAMemory.open(tmp_path_factory.mktemp("li") / "store", base_model=str(sharp_model_dir))
    ids = mem.add_turns("facts", [{"content": f"Question: {q} Answer: {a}"} for q, a in FACTS])
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before any module-scoped fixture: one thread here too
    try:
        [report] = mem.consolidate("facts", **FAST)
    finally:
        torch.set_num_threads(before)
    assert report.status == "consolidated", report
    [module] = mem.modules("facts")
    return Facts(mem, "facts", module.module_id, tuple(ids))


@pytest.fixture
def fresh_ns() -> str:
    """A namespace nothing has been written to (tests share the session's store)."""
    return f"t-{uuid.uuid4().hex[:12]}"
