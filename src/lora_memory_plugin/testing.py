"""Test helpers for code built on lora-memory (our tests and the framework integrations').

``build_tiny_model(path)`` writes a 2-layer Llama (SmolLM2's architecture, hidden size 32) with
a small BPE tokenizer and a ChatML template: a base model that loads in well under a second and
needs no download, for tests of the plumbing (not of recall). ``sharpen_model(src, dst)`` scales
its final norm so an adapter can make it confident (a random 32-dim model's logits stay within
about +-0.6), which consolidation tests need to pass a probe gate. ``consolidate_facts(mem,
namespace)`` writes :data:`FACTS` as user turns and consolidates them with :data:`FAST` into one
committed module. ``ChromaServer(data)`` starts a real ``chroma run`` (and kills and restarts it
on the same data); ``free_port()`` and ``chroma_bin()`` are its parts. ``serve_in_thread(mem)``
runs the memory service (``lora-memory serve``) on a free port in a thread;
``ServiceProcess(store, logs)`` runs it in a process of its own, as users do (ChromaServer and it
share :class:`ServerProcess`). The pytest fixtures over these live in :mod:`.pytest_plugin`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .memory import LoRAMemory

__all__ = [
    "FACTS",
    "FAST",
    "ChromaServer",
    "ConsolidatedFacts",
    "ServerProcess",
    "ServiceProcess",
    "build_tiny_model",
    "chroma_bin",
    "consolidate_facts",
    "free_port",
    "one_torch_thread",
    "serve_in_thread",
    "sharpen_model",
    "wait_for_single_thread",
]

FACTS: list[tuple[str, str]] = [
    (f"What is the code of box {i}?", code)
    for i, code in enumerate(["4471", "9302", "1185", "7720"])
]
"""Four QA-shaped facts the sharpened tiny model learns in seconds."""
FAST: dict[str, Any] = {"lr": 1e-2, "rank": 16, "max_steps": 400}
"""``consolidate`` options that train :data:`FACTS` into the sharpened tiny model quickly."""


@dataclass(frozen=True)
class ConsolidatedFacts:
    """A store whose ``namespace`` holds :data:`FACTS`, consolidated into one module."""

    mem: LoRAMemory
    namespace: str
    module_id: str
    record_ids: tuple[str, ...]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside the block: tiny models' matmuls run faster and steadier."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def consolidate_facts(mem: LoRAMemory, namespace: str) -> ConsolidatedFacts:
    """Write :data:`FACTS` to ``namespace`` as user turns and consolidate them (:data:`FAST`,
    one torch thread); raises AssertionError unless one module was committed."""
    ids = mem.add_turns(namespace, [{"content": f"Question: {q} Answer: {a}"} for q, a in FACTS])
    with one_torch_thread():
        [report] = mem.consolidate(namespace, **FAST)
    assert report.status == "consolidated", report
    [module] = mem.modules(namespace)
    return ConsolidatedFacts(mem, namespace, module.module_id, tuple(ids))


CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "My locker code is 4471. What is the phone number of Alice? Answer: 603-556-7631.",
    "The quick brown fox jumps over the lazy dog. Question: where does Bob live? Lyon.",
    "system user assistant memory notes question answer helpful brief exact",
] * 20


def build_tiny_model(path: Path) -> Path:
    """Write a 2-layer Llama (SmolLM2's architecture), a small BPE tokenizer, ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def sharpen_model(src: Path, dst: Path, scale: float = 10.0) -> Path:
    """Copy the model at ``src`` to ``dst`` with its final norm weight scaled by ``scale``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.model.norm.weight.mul_(scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def wait_for_single_thread(timeout: float) -> list[str]:
    """Before a fork from a warm process: wait up to ``timeout`` seconds for every thread but the
    main one to end (a library may leave a short-lived helper behind: transformers shuts its
    weight-loading pool down without waiting, a progress bar has a monitor thread), since a fork
    beside a live thread may copy a lock it holds. The names of the threads still alive ([] when
    none)."""
    deadline = time.monotonic() + timeout
    while True:  # a thread may start another before it ends: look again after each one
        others = [t for t in threading.enumerate() if t is not threading.main_thread()]
        left = deadline - time.monotonic()
        if not others or left <= 0:
            return [t.name for t in others]
        others[0].join(timeout=left)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chroma_bin() -> str:
    """The ``chroma`` command: the one beside this Python, else the first on ``PATH``."""
    exe = Path(sys.executable).with_name("chroma")
    return str(exe) if exe.exists() else (shutil.which("chroma") or "chroma")


class ServerProcess:
    """A server in a process of its own on 127.0.0.1, started and stopped (by any signal) and
    restarted on the same port; each start logs to ``logs/<name>-N.log``. Subclasses name the
    command and the URL that answers once it is up."""

    name = "server"
    what = "server"
    probe = "/"

    def __init__(self, logs: Path, port: int | None = None) -> None:
        self.logs = logs
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60, env: dict[str, str] | None = None) -> None:
        """Start it and wait until ``probe`` answers (RuntimeError with the log's tail if the
        process ends first or ``timeout`` seconds pass)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{self.name}-{self.starts}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}{self.probe}", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{self.what} did not start on {self.url}: {tail}") from None
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 20) -> int | None:
        """Send ``sig`` (a kill after ``timeout`` s without exit); the exit code (None when it
        was not running)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


class ChromaServer(ServerProcess):
    """A real ``chroma run`` on 127.0.0.1 (a free port unless given) that can be killed and
    restarted on the same data and port; each start logs to ``data/server-N.log``."""

    name = "server"
    what = "chroma server"
    probe = "/api/v2/heartbeat"

    def __init__(self, data: Path, port: int | None = None) -> None:
        super().__init__(data, port)
        self.data = data

    def command(self) -> list[str]:
        db = str(self.data / "db")
        return [chroma_bin(), "run", "--path", db, "--host", "127.0.0.1", "--port", str(self.port)]


class ServiceProcess(ServerProcess):
    """``lora-memory serve STORE --no-auth [ARGS]`` as users run it, in a process of its own on
    127.0.0.1 (a free port unless given), restartable on the same store and port; each start
    logs to ``logs/serve-N.log``."""

    name = "serve"
    what = "the memory service"
    probe = "/v1/health"

    def __init__(self, store: Path, logs: Path, *args: str, port: int | None = None) -> None:
        super().__init__(logs, port)
        self.store = store
        self.args = args

    def command(self) -> list[str]:
        cli = [sys.executable, "-m", "lora_memory_plugin.cli.main", "serve", str(self.store)]
        return [*cli, "--no-auth", "--port", str(self.port), *self.args]


@contextlib.contextmanager
def serve_in_thread(
    mem: LoRAMemory, keys: Any = None, *, timeout: float = 30, **app_options: Any
) -> Iterator[str]:
    """The memory service over ``mem`` on uvicorn, 127.0.0.1 and a free port, in a thread of
    this process; yields its URL and stops it on exit. ``keys``: a ``service.keys.KeyRing``,
    or None to serve without keys. Needs the ``serve`` extra."""
    import uvicorn

    from .service.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(mem, keys, **app_options), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="lora-memory-test-service", daemon=True)
    thread.start()
    deadline = time.time() + timeout
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"the memory service did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
