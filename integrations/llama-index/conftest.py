"""Fixtures shared by the llama-index-*-lora-memory test suites.

Everything is offline and real: the tiny Llama and the consolidated store come from
``lora_memory_plugin.pytest_plugin`` (``-p`` in the repository's pytest settings), with the real
MiniLM embedder and embedded Chroma; the namespace "facts" holds FACTS consolidated into a
committed LoRA module once per session. llama-index-core ships the NLTK data and tiktoken files
it needs (``llama_index/core/_static``), so nothing is fetched at run time.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lora_memory_plugin.testing import ConsolidatedFacts, one_torch_thread


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models' matmuls are too small for two threads: one is faster and steadier."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def facts(facts_store: ConsolidatedFacts, served: Any) -> ConsolidatedFacts:
    """The session's consolidated store: ``mem``, namespace "facts", its module and records.
    Each test runs twice: on the store itself, and with ``mem`` a RemoteMemory on a memory
    service over it."""
    return dataclasses.replace(facts_store, mem=served(facts_store.mem))


@pytest.fixture
def fresh_ns() -> str:
    """A namespace nothing has been written to (tests share the session's store)."""
    return f"t-{uuid.uuid4().hex[:12]}"
