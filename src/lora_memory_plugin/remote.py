"""``RemoteMemory``: the memory service (``lora-memory serve``) with ``LoRAMemory``'s methods.

Same method names, arguments, result types and errors as :class:`~.memory.LoRAMemory`, over
HTTP (httpx): the service's typed errors are raised again as the same classes, so
``except RecordNotFoundError`` works on either. The ``a``-prefixed twins use an async client.
Every LangChain and LlamaIndex class of this project accepts one as ``memory=``.

Example:
    >>> from lora_memory_plugin.remote import RemoteMemory
    >>> mem = RemoteMemory("http://127.0.0.1:8765", api_key="lmk_...")  # doctest: +SKIP
    >>> mem.add_turn("user-42", "My locker code is 4471.")  # doctest: +SKIP
    >>> mem.ask("user-42", "What is my locker code?").text  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import sys
import threading
import types
import typing
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar
from urllib.parse import quote

import httpx

from . import errors
from ._validate import check_ids
from .config import StoreConfig
from .registry.modules import ModuleManifest
from .types import (
    Answer,
    AnswerOptions,
    ChatOptions,
    ConsolidateOptions,
    ConsolidationReport,
    DocumentFields,
    ForgetOptions,
    ForgetReport,
    Generation,
    GetOptions,
    Hit,
    Recall,
    Record,
    RecordFilters,
    SearchFilters,
    StoreStatus,
    TurnFields,
    Unpack,
)

if TYPE_CHECKING:
    from .routing.router import RouteDecision

ENV_URL = "LORA_MEMORY_URL"
ENV_KEY = "LORA_MEMORY_API_KEY"

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[R]):
    """One request and how to read its answer."""

    method: str
    path: str
    body: Any
    read: Callable[[Any], R]


def _sync(
    build: Callable[Concatenate[RemoteMemory, P], _Call[R]],
) -> Callable[Concatenate[RemoteMemory, P], R]:
    @functools.wraps(build)
    def call(self: RemoteMemory, *args: P.args, **kwargs: P.kwargs) -> R:
        c = build(self, *args, **kwargs)
        return c.read(self._request(c.method, c.path, c.body))

    call.__name__ = call.__qualname__ = build.__name__.lstrip("_")
    return typing.cast("Callable[Concatenate[RemoteMemory, P], R]", call)


def _async(
    build: Callable[Concatenate[RemoteMemory, P], _Call[R]],
) -> Callable[Concatenate[RemoteMemory, P], Coroutine[Any, Any, R]]:
    @functools.wraps(build)
    async def call(self: RemoteMemory, *args: P.args, **kwargs: P.kwargs) -> R:
        c = build(self, *args, **kwargs)
        return c.read(await self._arequest(c.method, c.path, c.body))

    call.__name__ = call.__qualname__ = "a" + build.__name__.lstrip("_")
    call.__doc__ = f"Async twin of :meth:`{build.__name__.lstrip('_')}`."
    return typing.cast("Callable[Concatenate[RemoteMemory, P], Coroutine[Any, Any, R]]", call)


class RemoteMemory:
    """A memory service, used like a local :class:`~.memory.LoRAMemory`.

    Args:
        url: the service's base URL (default ``$LORA_MEMORY_URL``).
        api_key: the key ``lora-memory keys create`` printed (default ``$LORA_MEMORY_API_KEY``;
            none for a ``--no-auth`` service).
        timeout: seconds to wait for an answer (consolidation can take minutes: default 600).
        headers: extra headers for every request.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        url = url or os.environ.get(ENV_URL)
        if not url or not isinstance(url, str):
            raise errors.InvalidInputError(
                f"RemoteMemory needs the service URL, e.g. 'http://127.0.0.1:8765' (or set "
                f"{ENV_URL}); got {url!r}"
            )
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(ENV_KEY)
        self._headers = dict(headers or {})
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeout = timeout
        self._sync_client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._config: StoreConfig | None = None

    def __repr__(self) -> str:
        return f"RemoteMemory(url={self.url!r})"

    # ---- clients -----------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        with self._lock:  # one client (one connection pool) for every thread
            if self._sync_client is None:
                self._sync_client = httpx.Client(
                    base_url=self.url, headers=self._headers, timeout=self._timeout
                )
            return self._sync_client

    def _aclient(self) -> httpx.AsyncClient:
        # an async client's connections belong to the event loop that opened them: a new loop
        # (asyncio.run called again, a test's own loop) gets a client of its own
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_loop is not loop:
            self._async_client = httpx.AsyncClient(
                base_url=self.url, headers=self._headers, timeout=self._timeout
            )
            self._async_loop = loop
        return self._async_client

    def close(self) -> None:
        """Close the HTTP connections (the async client's with :meth:`aclose`)."""
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def aclose(self) -> None:
        self.close()
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    def __enter__(self) -> RemoteMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the store and its model -------------------------------------------------------
    @property
    def config(self) -> StoreConfig:
        """The service store's settings (read once; where Chroma is stays on the server)."""
        if self._config is None:
            data = self._request("GET", "/v1/config")
            self._config = StoreConfig.from_dict(data, source=f"{self.url}/v1/config")
        return self._config

    def generator(self) -> RemoteGenerator:
        """The service's base model, for a plain chat with no memory (``chat``) and its
        ``context_window``."""
        return RemoteGenerator(self)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """One request on the sync client; its JSON answer, or the typed error it carries."""
        try:
            response = self._client().request(method, path, json=body)
        except httpx.TransportError as e:
            raise self._unreachable(e) from e
        return self._result(response)

    async def _arequest(self, method: str, path: str, body: Any = None) -> Any:
        """:meth:`_request` on the async client."""
        try:
            response = await self._aclient().request(method, path, json=body)
        except httpx.TransportError as e:
            raise self._unreachable(e) from e
        return self._result(response)

    def _unreachable(self, e: httpx.TransportError) -> errors.BackendError:
        return errors.BackendError(
            f"cannot reach the memory service at {self.url} ({type(e).__name__}: {e}); is "
            "`lora-memory serve` running there?"
        )

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            return data
        err = data.get("error") if isinstance(data, dict) else None
        if not isinstance(err, dict):
            raise errors.BackendError(
                f"the memory service answered HTTP {response.status_code}: {response.text[:300]}"
            )
        cls = getattr(errors, str(err.get("type", "")), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.LoraMemoryError)):
            cls = errors.LoraMemoryError
        raise cls(str(err.get("message", "")))

    # ---- writes ------------------------------------------------------------------------
    def _add_turn(self, namespace: str, content: str, **fields: Unpack[TurnFields]) -> _Call[str]:
        """Store one conversation turn; returns its record id (see ``LoRAMemory.add_turn``)."""
        turn = {"content": content, **fields}
        return _Call("POST", _ns(namespace, "turns"), {"turns": [turn]}, lambda d: d["ids"][0])

    def _add_turns(
        self, namespace: str, turns: Iterable[Mapping[str, Any]], *, batch_size: int = 256
    ) -> _Call[list[str]]:
        """Store many turns, all or none (one request for every ``batch_size`` turns would
        lose that: they go in one request)."""
        if isinstance(turns, (str, bytes, Mapping)):
            raise errors.InvalidTypeError("turns must be an iterable of mappings")
        body = {"turns": [dict(t) for t in turns]}
        return _Call("POST", _ns(namespace, "turns"), body, lambda d: list(d["ids"]))

    def _add_document(
        self, namespace: str, text: str, **fields: Unpack[DocumentFields]
    ) -> _Call[list[str]]:
        """Chunk and store a document; one record id per chunk."""
        body = {"text": text, **fields}
        return _Call("POST", _ns(namespace, "documents"), body, lambda d: list(d["ids"]))

    def _delete(self, namespace: str, ids: Sequence[str]) -> _Call[int]:
        """Delete records from the buffer; returns how many existed."""
        body = {"ids": check_ids(ids)}
        return _Call("POST", _ns(namespace, "records/delete"), body, lambda d: int(d["deleted"]))

    def _update_metadata(
        self, namespace: str, ids: Sequence[str], metadata: dict[str, Any]
    ) -> _Call[None]:
        """Set user metadata keys on records."""
        body = {"ids": check_ids(ids), "metadata": metadata}
        return _Call("POST", _ns(namespace, "records/metadata"), body, lambda d: None)

    # ---- reads -------------------------------------------------------------------------
    def _search(
        self, namespace: str, query: str, k: int = 5, **filters: Unpack[SearchFilters]
    ) -> _Call[list[Hit]]:
        """Semantic search of the buffer, best first."""
        body = {"query": query, "k": k, **_times(filters)}
        return _Call("POST", _ns(namespace, "search"), body, lambda d: _list(Hit, d["hits"]))

    def _get(
        self, namespace: str, ids: list[str] | None = None, **options: Unpack[GetOptions]
    ) -> _Call[list[Record]]:
        """Records by id (in that order) or by filter."""
        body = {"ids": None if ids is None else check_ids(ids), **options}
        read = lambda d: _list(Record, d["records"])  # noqa: E731
        return _Call("POST", _ns(namespace, "records/get"), body, read)

    def _count(self, namespace: str, **filters: Unpack[RecordFilters]) -> _Call[int]:
        """How many records the namespace holds."""
        return _Call("POST", _ns(namespace, "records/count"), dict(filters), lambda d: d["count"])

    def _namespaces(self) -> _Call[list[str]]:
        """The namespaces with records that this key may use."""
        return _Call("GET", "/v1/namespaces", None, lambda d: list(d["namespaces"]))

    def _status(self) -> _Call[StoreStatus]:
        """Counts of the namespaces this key may use, and model readiness."""
        return _Call("GET", "/v1/status", None, lambda d: decode(StoreStatus, d))

    def _modules(self, namespace: str) -> _Call[list[ModuleManifest]]:
        """The namespace's committed modules (manifests, oldest first)."""
        return _Call(
            "GET", _ns(namespace, "modules"), None, lambda d: _list(ModuleManifest, d["modules"])
        )

    # ---- answering ---------------------------------------------------------------------
    def _ask(
        self, namespace: str, question: str, mode: str = "auto", **options: Unpack[AnswerOptions]
    ) -> _Call[Answer]:
        """Answer ``question`` from the namespace's memory (see ``LoRAMemory.ask``)."""
        body = {"question": question, "mode": mode, **options}
        return _Call("POST", _ns(namespace, "ask"), body, lambda d: decode(Answer, d))

    def _ask_many(
        self,
        namespace: str | Sequence[str],
        questions: Sequence[str],
        mode: str = "auto",
        *,
        batch_size: int = 16,
        **options: Unpack[AnswerOptions],
    ) -> _Call[list[Answer]]:
        """Answer many questions in one request; ``namespace``: one, or one per question."""
        if isinstance(questions, str):
            raise errors.InvalidTypeError("questions must be a list of str, not one str")
        nss = [namespace] * len(questions) if isinstance(namespace, str) else list(namespace)
        body = {"namespaces": nss, "questions": list(questions), "mode": mode, **options}
        body["batch_size"] = batch_size
        return _Call("POST", "/v1/ask_many", body, lambda d: _list(Answer, d["answers"]))

    def _chat(
        self, namespace: str, messages: Sequence[dict[str, str]], **options: Unpack[ChatOptions]
    ) -> _Call[Answer]:
        """Answer a conversation with the module routed from its last user message."""
        body = {"messages": list(messages), **options}
        return _Call("POST", _ns(namespace, "chat"), body, lambda d: decode(Answer, d))

    def _recall(
        self, namespace: str, query: str, *, max_new_tokens: int | None = None
    ) -> _Call[Recall]:
        """What the best-matching module recalls for ``query``, with no retrieved text."""
        body = {"query": query, "max_new_tokens": max_new_tokens}
        return _Call("POST", _ns(namespace, "recall"), body, lambda d: decode(Recall, d))

    def _route(self, namespace: str, query: str) -> _Call[RouteDecision]:
        """The routing decision for ``query``."""
        from .routing.router import RouteDecision  # noqa: PLC0415 (routing loads chromadb)

        body = {"query": query}
        return _Call("POST", _ns(namespace, "route"), body, lambda d: decode(RouteDecision, d))

    # ---- consolidation -----------------------------------------------------------------
    def _consolidate(
        self, /, namespace: str | None = None, **options: Unpack[ConsolidateOptions]
    ) -> _Call[list[ConsolidationReport]]:
        """Train the namespace's buffered records into modules, on the service's device; with
        no namespace, every namespace the key may use, each standing alone (``locked`` or
        ``failed`` in its report)."""
        read = lambda d: _list(ConsolidationReport, d["reports"])  # noqa: E731
        path = "/v1/consolidate" if namespace is None else _ns(namespace, "consolidate")
        return _Call("POST", path, {"options": options}, read)

    def _forget(
        self, /, namespace: str, ids: Sequence[str] | None = None, **options: Unpack[ForgetOptions]
    ) -> _Call[ForgetReport]:
        """Delete records from the buffer and the modules that hold them (``progress`` shows
        on the service, not here)."""
        opts: dict[str, Any] = dict(options)
        opts.pop("progress", None)
        body = {
            "ids": None if ids is None else check_ids(ids),
            "where": opts.pop("where", None),
            "missing": opts.pop("missing", False),
            "rebuild": opts.pop("rebuild", True),
            "options": opts,  # the retraining's consolidation options
        }
        return _Call("POST", _ns(namespace, "forget"), body, lambda d: decode(ForgetReport, d))

    add_turn, aadd_turn = _sync(_add_turn), _async(_add_turn)
    add_turns, aadd_turns = _sync(_add_turns), _async(_add_turns)
    add_document, aadd_document = _sync(_add_document), _async(_add_document)
    delete, adelete = _sync(_delete), _async(_delete)
    update_metadata, aupdate_metadata = _sync(_update_metadata), _async(_update_metadata)
    search, asearch = _sync(_search), _async(_search)
    get, aget = _sync(_get), _async(_get)
    count, acount = _sync(_count), _async(_count)
    namespaces, anamespaces = _sync(_namespaces), _async(_namespaces)
    status, astatus = _sync(_status), _async(_status)
    modules, amodules = _sync(_modules), _async(_modules)
    ask, aask = _sync(_ask), _async(_ask)
    ask_many, aask_many = _sync(_ask_many), _async(_ask_many)
    chat, achat = _sync(_chat), _async(_chat)
    recall, arecall = _sync(_recall), _async(_recall)
    route, aroute = _sync(_route), _async(_route)
    consolidate, aconsolidate = _sync(_consolidate), _async(_consolidate)
    forget, aforget = _sync(_forget), _async(_forget)


class RemoteGenerator:
    """The service's base model with the two things frameworks ask of a local ``Generator``:
    its ``context_window`` and a plain ``chat`` (no memory, no namespace)."""

    def __init__(self, memory: RemoteMemory) -> None:
        self._memory = memory
        self._window: int | None = None

    @property
    def context_window(self) -> int:
        if self._window is None:
            m = self._memory
            self._window = int(m._request("GET", "/v1/model")["context_window"])
        return self._window

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int = 64) -> Generation:
        m = self._memory
        body = {"messages": messages, "max_new_tokens": max_new_tokens}
        return decode(Generation, m._request("POST", "/v1/generate", body))


# ---- the wire --------------------------------------------------------------------------
def _ns(namespace: str, rest: str) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise errors.InvalidInputError(f"namespace must be a non-empty str, got {namespace!r}")
    # every reserved character is escaped, '.' too: '..' must stay a name, not a path step
    return f"/v1/namespaces/{quote(namespace, safe='').replace('.', '%2E')}/{rest}"


def _times(filters: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(filters)
    for key in ("since", "until"):
        value = out.get(key)
        if value is not None and hasattr(value, "timestamp"):
            out[key] = value.timestamp()
    return out


def _list(cls: type[T], items: Iterable[Any]) -> list[T]:
    return [decode(cls, x) for x in items]


def decode(cls: type[T], data: Any) -> T:
    """The result type ``cls`` (a frozen dataclass of :mod:`.types` and friends) from its
    ``to_dict()`` JSON: nested dataclasses and tuples rebuilt, derived keys dropped."""
    if cls is ModuleManifest:
        data = dict(data)
        data["namespace"] = json.dumps(data["namespace"])
        return ModuleManifest.from_json(json.dumps(data))  # type: ignore[return-value]
    return typing.cast(T, _decode(cls, data))


def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        kwargs = {
            f.name: _decode(hints[f.name], value[f.name])
            for f in dataclasses.fields(tp)
            if f.name in value
        }
        return tp(**kwargs)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        inner = args[0] if args else Any
        return tuple(_decode(inner, v) for v in value)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _decode(arg, value)
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return _decode(arg, value)
        return value
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


__all__ = ["RemoteGenerator", "RemoteMemory", "decode"]
