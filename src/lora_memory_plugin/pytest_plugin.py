"""A pytest plugin for code built on lora-memory: ``pytest -p lora_memory_plugin.pytest_plugin``
(our suite and both integrations' load it that way, from their pytest settings).

Fixtures, all offline and real:

- ``tiny_model_dir`` / ``sharp_model_dir`` (session): the tiny no-download base models of
  :mod:`lora_memory_plugin.testing`;
- ``one_thread``: torch on one thread for the test (tiny matmuls run faster and steadier);
- ``chroma_server`` (session): a real ``chroma run`` on 127.0.0.1 and a free port;
- ``facts_store`` (session): a store on the sharpened tiny model whose namespace ``facts`` holds
  :data:`~lora_memory_plugin.testing.FACTS` consolidated into one committed module
  (:class:`~lora_memory_plugin.testing.ConsolidatedFacts`);
- ``served`` (session, parametrized ``local`` / ``remote``): runs a test on the store itself and
  again through the memory service (a :class:`~lora_memory_plugin.remote.RemoteMemory`).

Loading it sets the Hugging Face libraries offline: nothing is downloaded at test time.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._device import configure_cpu_threads
from .memory import LoRAMemory
from .testing import (
    ChromaServer,
    ConsolidatedFacts,
    build_tiny_model,
    consolidate_facts,
    one_torch_thread,
    serve_in_thread,
    sharpen_model,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a small BPE tokenizer and a ChatML template (built, not fetched)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="session")
def sharp_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its final norm scaled x10: a random 32-dim model has logits within
    about +-0.6, so no adapter can make it confident; a trained LM's output scale can."""
    return sharpen_model(tiny_model_dir, tmp_path_factory.mktemp("sharp") / "tiny-sharp")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models' matmuls are too small for two threads: one is faster and steadier."""
    configure_cpu_threads()
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def facts_store(
    tmp_path_factory: pytest.TempPathFactory, sharp_model_dir: Path
) -> ConsolidatedFacts:
    """A store whose namespace ``facts`` holds FACTS, consolidated into one committed module."""
    mem = LoRAMemory.open(
        tmp_path_factory.mktemp("facts") / "store", base_model=str(sharp_model_dir)
    )
    return consolidate_facts(mem, "facts")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` on 127.0.0.1 and a random free port; stopped after the session."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    server.start()
    yield server.url
    server.stop(signal.SIGTERM)


@pytest.fixture(scope="session", params=["local", "remote"])
def served(request: pytest.FixtureRequest) -> Iterator[Callable[[LoRAMemory], Any]]:
    """Run a test twice: on the store itself (``local``) and through the memory service
    (``remote``). Yields a function that gives back a store as the test should see it: the
    store, or a :class:`~.remote.RemoteMemory` on a service over it (one keyless service per
    store, on 127.0.0.1, stopped at the end of the session)."""
    if request.param == "local":
        yield lambda mem: mem
        return
    from .remote import RemoteMemory  # noqa: PLC0415 (httpx, only for the remote runs)

    with contextlib.ExitStack() as stack:
        clients: dict[int, RemoteMemory] = {}

        def through_service(mem: LoRAMemory) -> RemoteMemory:
            if id(mem) not in clients:
                url = stack.enter_context(serve_in_thread(mem, None))
                clients[id(mem)] = RemoteMemory(url)
                stack.callback(clients[id(mem)].close)
            return clients[id(mem)]

        yield through_service
