"""Shared fixtures: a store factory parametrised over both Chroma backends. The tiny models, the
`chroma run` server and the one-thread switch come from ``lora_memory_plugin.pytest_plugin``
(loaded with ``-p`` in pyproject's pytest settings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(params=["embedded", "server"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path
) -> Callable[..., object]:
    """Open a fresh store on the parametrised backend, answering with the tiny model."""
    from lora_memory_plugin import LoRAMemory

    counter = iter(range(1000))

    def factory(**kw: object) -> LoRAMemory:
        url = request.getfixturevalue("chroma_server") if backend == "server" else None
        n = next(counter)
        path = tmp_path / f"store-{n}"
        kw.setdefault("base_model", str(tiny_model_dir))
        if url:  # one server for the session: a database per store keeps tests apart
            kw.setdefault("chroma_database", f"t{abs(hash(str(tmp_path))) % 10**12}-{n}")
        return LoRAMemory.open(path, chroma_url=url, **kw)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def store(make_store: Callable[..., object]) -> object:
    return make_store()
