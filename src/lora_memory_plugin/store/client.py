"""Chroma clients: a server (HttpClient) or embedded Chroma shared safely between processes.

Embedded Chroma keeps each collection's vector index in the memory of the process that opened
it: when another process (say, the cron job) writes to the same directory, this process's
searches do not see those records, and a write from a stale process could persist an old index.
:class:`EmbeddedChroma` closes that gap. Every write holds an inter-process lock and leaves a
stamp (``DIR/locks/buffer.stamp``) naming the writing process; before each operation a process
compares the stamp (one small file read) and, when another process has written since, reopens
its Chroma system under the lock. Reopening costs ~10 ms, plus replaying Chroma's unpersisted
log (see :data:`HNSW_CONFIG`), and happens only after foreign writes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from .._filelock import file_lock
from .._fsutil import write_new_file
from ..config import URL_CREDENTIALS_RULE, url_has_credentials
from ..errors import BackendError, InvalidInputError, StoreError

logger = logging.getLogger(__name__)

_NONCE = uuid.uuid4().hex[:12]
_counter = itertools.count(1)


def _process_token() -> str:
    return f"{os.getpid()}-{_NONCE}"  # pid first: a forked child gets a new token


def _settings(**kw: Any) -> Any:
    if not kw:  # a copy: PersistentClient writes its path into the settings it is given
        return _default_settings().model_copy()
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, **kw)


@functools.cache
def _default_settings() -> Any:
    """Built once: pydantic-settings re-reads the environment on every build, which every reopen
    after a foreign write paid under the write lock (a reopen took 18 ms with it, 9 ms without)."""
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


class ServerChroma:
    """A Chroma server reached over HTTP; the server serialises concurrent writers itself."""

    generation = 0

    def __init__(
        self,
        url: str,
        database: str,
        *,
        has_modules: Callable[[], bool] | None = None,
        options: ServerOptions | None = None,
    ) -> None:
        self.url = url
        self._client = _http_client(url, database, has_modules, options)

    def client(self) -> Any:
        return self._client

    @contextlib.contextmanager
    def writing(self) -> Iterator[Any]:
        yield self._client


class EmbeddedChroma:
    """One embedded Chroma per store directory per process, kept coherent across processes."""

    _registry: ClassVar[dict[str, EmbeddedChroma]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.path = root / "chroma"
        self.lock_path = root / "locks" / "buffer.lock"
        self.stamp_path = root / "locks" / "buffer.stamp"
        self.generation = 0
        self._lock = threading.RLock()
        self._client: Any = None
        self._seen: str | None = None

    @classmethod
    def for_store(cls, root: Path) -> EmbeddedChroma:
        key = str(root.resolve())
        with cls._registry_lock:
            inst = cls._registry.get(key)
            if inst is None:
                inst = cls._registry[key] = cls(root)
            return inst

    def client(self) -> Any:
        """The client for a read; reopened first if another process wrote since we looked."""
        with self._lock:
            stamp = self._read_stamp()
            if self._client is None or self._is_foreign(stamp):
                with file_lock(self.lock_path, what="the store write lock"):
                    self._reopen()
            return self._client

    @contextlib.contextmanager
    def writing(self) -> Iterator[Any]:
        """Hold the inter-process write lock, with a fresh client, and stamp the write."""
        with self._lock, file_lock(self.lock_path, what="the store write lock"):
            if self._client is None or self._is_foreign(self._read_stamp()):
                self._reopen()
            try:
                yield self._client
            finally:  # stamp even on a failed write: part of a batch may have landed
                self._write_stamp(f"{_process_token()}:{next(_counter)}")

    # ---- internals -----------------------------------------------------------------------
    def _is_foreign(self, stamp: str | None) -> bool:
        if stamp == self._seen:
            return False
        return stamp is not None and not stamp.startswith(_process_token() + ":")

    def _read_stamp(self) -> str | None:
        try:
            return self.stamp_path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return "unreadable"  # treat as foreign: reopening is always safe

    def _write_stamp(self, token: str) -> None:
        tmp = self.stamp_path.with_name(f".{self.stamp_path.name}.{os.getpid()}.tmp")
        write_new_file(tmp, token, encoding="ascii")  # a link planted at tmp is not followed
        os.replace(tmp, self.stamp_path)
        self._seen = token

    def _reopen(self) -> None:
        import chromadb
        from chromadb.api.shared_system_client import SharedSystemClient

        if self._client is not None:
            # Drop this path's cached system so PersistentClient loads the directory afresh.
            system = SharedSystemClient._identifier_to_system.pop(str(self.path), None)
            SharedSystemClient._identifier_to_refcount.pop(str(self.path), None)
            if system is not None:
                with contextlib.suppress(Exception):
                    system.stop()
            logger.debug(
                "reopening embedded Chroma at %s after a write by another process", self.path
            )
        try:
            self._client = chromadb.PersistentClient(path=str(self.path), settings=_settings())
        except Exception as e:
            raise StoreError(f"cannot open the embedded Chroma store in {self.path}: {e}") from e
        self._seen = self._read_stamp()
        self.generation += 1


#: HNSW settings of every collection the store creates. Chroma keeps the newest adds (up to
#: ``sync_threshold``) only in its write-ahead log until it persists the index, and a process that
#: reopens the store after another process wrote replays that log into the index before its first
#: read or write. At Chroma's default of 1,000 that first operation took 0.3-0.6 s at 3-10k records
#: on a 2-core CPU (the stall every writer paid, under the write lock, with several processes
#: writing); at 100 it takes 20-40 ms, for bulk inserts ~25% slower (10k vectors: 8.6 -> 10.9 s).
HNSW_CONFIG: dict[str, Any] = {"space": "cosine", "sync_threshold": 100}


def get_or_create_collection(
    client: Any, name: str, *, metadata: dict[str, Any], embedding_function: Any
) -> Any:
    """``client.get_or_create_collection`` with :data:`HNSW_CONFIG`; a collection created by an
    older version (Chroma's default sync threshold) is moved to it. Call under the write lock."""
    col = client.get_or_create_collection(
        name,
        metadata=metadata,
        embedding_function=embedding_function,
        configuration={"hnsw": dict(HNSW_CONFIG)},
    )
    hnsw = (getattr(col, "configuration", None) or {}).get("hnsw") or {}
    want = HNSW_CONFIG["sync_threshold"]
    if hnsw.get("sync_threshold", want) != want:
        col.modify(configuration={"hnsw": {"sync_threshold": want}})
    return col


CREDENTIALS_ENV = "LORA_MEMORY_CHROMA_CREDENTIALS"
"""The Chroma server credentials (a token, or ``user:password``): read from the environment
only, so a store's config can be shared, and never written into a message."""

_AUTH_PROVIDERS = {
    "token": "chromadb.auth.token_authn.TokenAuthClientProvider",
    "basic": "chromadb.auth.basic_authn.BasicAuthClientProvider",
}


@dataclass(frozen=True)
class ServerOptions:
    """How to reach a Chroma server: auth, TLS verification, extra headers (``[buffer]``)."""

    auth: str = ""  # '', 'token', 'basic'
    token_header: str = "Authorization"
    ca_file: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def settings(self) -> dict[str, Any]:
        """Extra chromadb ``Settings`` fields (credentials from :data:`CREDENTIALS_ENV`)."""
        out: dict[str, Any] = {}
        if self.auth:
            creds = os.environ.get(CREDENTIALS_ENV, "")
            if not creds:
                raise InvalidInputError(
                    f"buffer.chroma_auth = {self.auth!r} needs the credentials in "
                    f"${CREDENTIALS_ENV} ({'a token' if self.auth == 'token' else 'user:password'})"
                )
            out["chroma_client_auth_provider"] = _AUTH_PROVIDERS[self.auth]
            out["chroma_client_auth_credentials"] = creds
            if self.auth == "token":
                out["chroma_auth_token_transport_header"] = self.token_header
        if self.ca_file:
            out["chroma_server_ssl_verify"] = self.ca_file
        if self.headers:
            out["chroma_server_headers"] = dict(self.headers)
        return out


def _redact(text: str) -> str:
    """``text`` with the configured credentials (and their parts) replaced by ``***``."""
    creds = os.environ.get(CREDENTIALS_ENV, "")
    for secret in sorted({creds, *creds.split(":", 1)}, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _http_client(
    url: str,
    database: str,
    has_modules: Callable[[], bool] | None = None,
    options: ServerOptions | None = None,
) -> Any:
    import chromadb

    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InvalidInputError(
            f"chroma_url must look like http://host:port, got {url_for_messages(url)!r}"
        )
    if url_has_credentials(url):
        raise InvalidInputError(URL_CREDENTIALS_RULE)
    host, ssl = u.hostname, u.scheme == "https"
    port = u.port or (443 if ssl else 8000)
    extra = (options or ServerOptions()).settings()
    headers = extra.get("chroma_server_headers")

    def connect() -> Any:
        return chromadb.HttpClient(
            host=host,
            port=port,
            ssl=ssl,
            headers=headers,
            database=database,
            settings=_settings(**extra),
        )

    try:
        try:
            return connect()
        except Exception as e:
            if "not found" not in str(e).lower():
                raise
            if has_modules is not None and has_modules():
                raise StoreError(
                    _missing_buffer(f"database {database!r} on {url_for_messages(url)}")
                ) from e
            admin = chromadb.AdminClient(
                _settings(
                    chroma_api_impl="chromadb.api.fastapi.FastAPI",
                    chroma_server_host=host,
                    chroma_server_http_port=port,
                    chroma_server_ssl_enabled=ssl,
                    **extra,
                )
            )
            admin.create_database(database)
            return connect()
    except StoreError:
        raise
    except Exception as e:
        raise BackendError(
            f"cannot reach the Chroma server at {url_for_messages(url)} ({_redact(str(e))}). "
            f"Start one with `chroma run --path DIR --host {host} --port {port}` or fix "
            "chroma_url (and buffer.chroma_auth, if the server needs credentials)."
        ) from None


def make_provider(
    root: Path,
    url: str,
    database: str,
    *,
    has_modules: Callable[[], bool] | None = None,
    options: ServerOptions | None = None,
) -> ServerChroma | EmbeddedChroma:
    """The client provider for a store: a server when ``url`` is set, else embedded.

    When the buffer -- the server's database, or ``DIR/chroma`` -- is missing and
    ``has_modules()`` says the store has modules, StoreError is raised instead of creating it
    empty (asked only then: listing the modules is no cost of every open).
    """
    if url:
        return ServerChroma(url, database, has_modules=has_modules, options=options)
    if not (root / "chroma").exists() and has_modules is not None and has_modules():
        raise StoreError(_missing_buffer(f"{root / 'chroma'}", mkdir=root / "chroma"))
    (root / "locks").mkdir(parents=True, exist_ok=True)
    provider = EmbeddedChroma.for_store(root)
    provider.client()  # open now: a broken directory fails at open(), not at first search
    return provider


def _missing_buffer(where: str, mkdir: Path | None = None) -> str:
    start = (
        f"`mkdir {mkdir}`"
        if mkdir is not None
        else "create the database (chromadb.AdminClient(...).create_database(name))"
    )
    return (
        f"the buffer ({where}) does not exist, but this store has LoRA modules trained from "
        "it: nothing was created. Check chroma_url and chroma_database in the store config "
        "(a typo?), the Chroma server's data volume, or a restored store directory. To start "
        f"an empty buffer on purpose, {start}; the modules stay, and consolidation refuses to "
        "drop them until you run `lora-memory forget DIR -n NS --missing`."
    )


def url_for_messages(url: str) -> str:
    """``url`` as messages may show it: scheme, host, port and path; no user:password, no
    query or fragment (either may carry a token)."""
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc.rpartition('@')[2]}{u.path}"
