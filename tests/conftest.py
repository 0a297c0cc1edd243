"""Shared fixtures: a tiny chat model built from a config (no downloads), a real `chroma run`
server on a free local port, and a store factory parametrised over both Chroma backends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lora_memory_plugin.testing import build_tiny_model, sharpen_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chroma_bin() -> str:
    exe = Path(sys.executable).with_name("chroma")
    return str(exe) if exe.exists() else (shutil.which("chroma") or "chroma")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` on 127.0.0.1 and a random free port; stopped after the session."""
    data = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = open(data / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            _chroma_bin(),
            "run",
            "--path",
            str(data / "db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"chroma server did not start: {(data / 'server.log').read_text()[-2000:]}"
                ) from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


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


@pytest.fixture(scope="session")
def sharp_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its final norm scaled x10: a random 32-dim model has logits within
    about +-0.6, so no adapter can make it confident; a trained LM's output scale can."""
    return sharpen_model(tiny_model_dir, tmp_path_factory.mktemp("sharp") / "tiny-sharp")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models' matmuls are too small for two threads: one is faster and steadier."""
    import torch

    from lora_memory_plugin._device import configure_cpu_threads

    configure_cpu_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
