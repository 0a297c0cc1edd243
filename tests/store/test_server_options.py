"""Chroma server options: auth credentials from the environment, extra headers, no credentials
in URLs, and never a credential in an error message."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lora_memory_plugin import BackendError, ConfigError, InvalidInputError, LoRAMemory
from lora_memory_plugin.config import BufferConfig, StoreConfig, save_config
from lora_memory_plugin.store.client import CREDENTIALS_ENV

SECRET = "s3cret-token-4471"


class _Refuse(BaseHTTPRequestHandler):
    """A server that records each request's headers and answers 401, as Chroma does to a
    wrong token."""

    seen: ClassVar[list[dict[str, str]]] = []

    def _answer(self) -> None:
        type(self).seen.append(dict(self.headers))
        body = f'{{"error": "Unauthorized", "message": "bad token {SECRET}"}}'.encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    _Refuse.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def store_at(root: Path, url: str, **buffer: Any) -> Path:
    root.mkdir()
    save_config(root, StoreConfig(buffer=BufferConfig(chroma_url=url, **buffer)))
    return root


def test_token_and_headers_are_sent_and_never_echoed(tmp_path, refusing_server, monkeypatch):
    root = store_at(
        tmp_path / "s", refusing_server, chroma_auth="token", chroma_headers={"X-Gateway": "g1"}
    )
    monkeypatch.setenv(CREDENTIALS_ENV, SECRET)
    with pytest.raises(BackendError) as err:
        LoRAMemory.open(root)
    assert SECRET not in str(err.value) and "***" in str(err.value)
    assert err.value.__cause__ is None  # the raw exception (with the server's text) is dropped
    assert any(
        h.get("Authorization") == f"Bearer {SECRET}" and h.get("X-Gateway") == "g1"
        for h in _Refuse.seen
    )


def test_auth_without_credentials_says_where_they_go(tmp_path, refusing_server, monkeypatch):
    root = store_at(tmp_path / "s", refusing_server, chroma_auth="basic")
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    with pytest.raises(InvalidInputError, match=CREDENTIALS_ENV):
        LoRAMemory.open(root)
    assert _Refuse.seen == []  # nothing was sent


def test_credentials_in_the_url_are_refused_without_echoing_them(tmp_path):
    with pytest.raises(ConfigError, match="must not carry credentials") as err:
        BufferConfig(chroma_url="http://alice:hunter22@chroma.internal:8000")
    assert "hunter22" not in str(err.value)
    with pytest.raises(ConfigError, match="must not carry credentials") as err2:
        LoRAMemory.open(tmp_path / "new", chroma_url="http://alice:hunter22@127.0.0.1:9")
    assert "hunter22" not in str(err2.value)
    root = store_at(tmp_path / "s", "http://127.0.0.1:9")  # then --chroma-url on the CLI
    with pytest.raises(InvalidInputError, match="must not carry credentials") as err3:
        LoRAMemory.open(root, chroma_url="http://alice:hunter22@127.0.0.1:9")
    assert "hunter22" not in str(err3.value)
    for fine in ("http://chroma.internal:8000/p@th", "https://h:1?x=a@b", "http://h:2#a@b"):
        BufferConfig(chroma_url=fine)  # an "@" after the host is not a userinfo part
    for bad in ({"chroma_auth": "kerberos"}, {"chroma_token_header": "X-Api-Key"}):
        with pytest.raises(ConfigError):
            BufferConfig(**bad)
