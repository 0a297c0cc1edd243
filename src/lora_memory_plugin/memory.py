"""``LoRAMemory``: the one core API every CLI command and integration goes through.

A thin facade: it validates the namespace (the tenant boundary) and hands each call to the
service that does it -- :class:`.store.service.Records` (writes and reads of the buffer),
:class:`.generation.service.Answerer` (every way of answering) and
:class:`.consolidation.service.Consolidator` (consolidate, forget, calibrate) -- over the
:class:`._store.Store` that :meth:`LoRAMemory.open` builds. Nothing below imports this module.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._store import Store
from .config import StoreConfig
from .consolidation.service import Consolidator
from .generation.service import Answerer
from .registry.modules import list_modules
from .store.namespaces import validate_namespace
from .types import (
    Answer,
    AnswerOptions,
    ChatOptions,
    ConsolidateOptions,
    ConsolidationReport,
    DocumentFields,
    ForgetOptions,
    ForgetReport,
    GetOptions,
    Hit,
    OpenOptions,
    Recall,
    Record,
    RecordFilters,
    SearchFilters,
    StoreStatus,
    TurnFields,
)

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

if TYPE_CHECKING:
    from .consolidation.capacity import CalibrationReport
    from .generation.backend import Generator
    from .registry.modules import ModuleManifest
    from .routing.index import RoutingIndex
    from .routing.router import RouteDecision
    from .store.buffer import Buffer

P = ParamSpec("P")
R = TypeVar("R")


def _async_twin(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(fn, *args, **kwargs)

    twin.__doc__ = f"Async twin of :meth:`{fn.__name__}` (runs it in a worker thread)."
    return twin


class LoRAMemory:
    """A memory store: a Chroma buffer searchable at once, answered from by a local model.

    Open one with :meth:`open`; it creates the store on first use.

    Example:
        >>> from lora_memory_plugin import LoRAMemory
        >>> mem = LoRAMemory.open("./memory")
        >>> rid = mem.add_turn("user-42", "My locker code is 4471.", role="user", session_id="s1")
        >>> [h.text for h in mem.search("user-42", "locker code", k=1)]
        ['My locker code is 4471.']
        >>> mem.ask("user-42", "What is my locker code?", mode="rag").text  # doctest: +SKIP
        '4471'
    """

    def __init__(self, store: Store) -> None:
        """Wrap an opened :class:`._store.Store`; use :meth:`open`."""
        # the buffer's service imports chromadb code: loaded with the first store, not the package
        from .store.service import Records  # noqa: PLC0415 (chromadb on first use)

        self._store = store
        self.path, self.chroma_url, self.embedder = store.path, store.chroma_url, store.embedder
        settings = lambda: store.config.buffer  # noqa: E731 (update_config swaps the config)
        self._records = Records(store.buffer, settings, store.routing.delete_record_keys)
        self._answerer = Answerer(store)
        self._consolidator = Consolidator(store)

    @property
    def config(self) -> StoreConfig:
        """The store's settings (``lora-memory.toml``), as of the last open or update."""
        return self._store.config

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | Path, chroma_url: str | None = None, **options: Unpack[OpenOptions]
    ) -> LoRAMemory:
        """Open (or create) the store at ``path``.

        ``chroma_url`` (``http://host:port``) uses a Chroma server instead of embedded Chroma:
        saved in a new store's config, for an existing one it overrides for this process only.
        ``options`` (:class:`~.types.OpenOptions`): ``create``, ``base_model``, ``embedder``,
        ``chroma_database``.

        Raises:
            StoreError: ``path`` is a file, or a non-empty directory that is not a store.
            ConfigError: the store's ``lora-memory.toml`` is unreadable or invalid.
            BackendError: the Chroma server cannot be reached.
        """
        return cls(Store.open(path, chroma_url, **options))

    def close(self) -> None:
        """Nothing to release today (clients are shared per store); kept for `with` blocks."""

    def __enter__(self) -> LoRAMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.chroma_url or "embedded"
        return f"LoRAMemory(path={str(self.path)!r}, chroma={where!r})"

    # ---- writes ------------------------------------------------------------------------
    def add_turn(self, namespace: str, content: str, **fields: Unpack[TurnFields]) -> str:
        """Store one conversation turn; returns its record id (the same id for a duplicate).

        ``fields`` (:class:`~.types.TurnFields`): ``role`` ('user' by default), ``session_id``,
        ``metadata``, ``created_at``.
        """
        return self._records.add_turn(self._ns(namespace), content, **fields)

    def add_turns(
        self,
        namespace: str,
        turns: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Store many turns, batched: mappings with ``content`` and optional ``role``,
        ``session_id``, ``metadata``, ``created_at``. Every turn is validated before anything
        is written (one bad turn stores nothing); ``progress(n)`` follows each batch of n."""
        ns = self._ns(namespace)
        return self._records.add_turns(ns, turns, batch_size=batch_size, progress=progress)

    def add_document(
        self, namespace: str, text: str, **fields: Unpack[DocumentFields]
    ) -> list[str]:
        """Chunk a document on token boundaries (with overlap) and store the chunks; returns
        one record id per chunk, in document order. ``fields``: ``source``, ``session_id``,
        ``metadata``, ``created_at``."""
        return self._records.add_document(self._ns(namespace), text, **fields)

    def delete(self, namespace: str, ids: Sequence[str]) -> int:
        """Delete records from the buffer now, and their routing keys; returns how many existed.

        A consolidated record still lives in its module until the namespace's next
        ``consolidate``, which quarantines that module and retrains its other records (or,
        when more than half of what the modules hold is missing, changes nothing and raises
        MissingRecordsError). :meth:`forget` is the deliberate way: it removes modules at once.
        """
        return self._records.delete(self._ns(namespace), ids)

    def update_metadata(self, namespace: str, ids: Sequence[str], metadata: dict[str, Any]) -> None:
        """Set user metadata keys on records (the reserved keys stay lora-memory's);
        RecordNotFoundError if an id is missing."""
        self._records.update_metadata(self._ns(namespace), ids, metadata)

    # ---- reads -------------------------------------------------------------------------
    def search(
        self, namespace: str, query: str, k: int = 5, **filters: Unpack[SearchFilters]
    ) -> list[Hit]:
        """Semantic search of the buffer (RAG), best first (``score``: cosine similarity).

        ``filters`` (:class:`~.types.SearchFilters`): ``kind`` ('turn' / 'document'),
        ``session_id``, ``role``, ``status`` ('buffered' / 'consolidated'), ``since`` /
        ``until`` (datetime or epoch seconds) and a raw Chroma ``where``.
        """
        return self._records.search(self._ns(namespace), query, k, **filters)

    def get(
        self, namespace: str, ids: list[str] | None = None, **options: Unpack[GetOptions]
    ) -> list[Record]:
        """Records by id (in that order; RecordNotFoundError if one is missing) or by filter:
        ``kind``, ``session_id``, ``status``, ``where``, paged by ``limit`` and ``offset``."""
        return self._records.get(self._ns(namespace), ids, **options)

    def count(self, namespace: str, **filters: Unpack[RecordFilters]) -> int:
        """How many records the namespace holds (filters as for :meth:`get`)."""
        return self._records.count(self._ns(namespace), **filters)

    def namespaces(self) -> list[str]:
        """Every namespace with records in this store."""
        return self._store.buffer.namespaces()

    def status(self) -> StoreStatus:
        """Counts per namespace (records, modules, quarantined) and whether the base model is
        ready."""
        return self._store.status()

    def modules(self, namespace: str) -> list[ModuleManifest]:
        """The committed LoRA modules of ``namespace`` (manifests, oldest first)."""
        return list_modules(self.path, self._ns(namespace))

    # ---- answering (generation.service.Answerer) ----------------------------------------
    def ask(
        self, namespace: str, question: str, mode: str = "auto", **options: Unpack[AnswerOptions]
    ) -> Answer:
        """Answer ``question`` from this namespace's memory (``options``: ``k``,
        ``max_new_tokens``).

        Modes: ``auto`` (per question: lora, hybrid or rag, from routing confidence and the
        module's measured agreement), ``base`` (model alone), ``rag`` (top-k buffer hits in
        context), ``icl`` (the whole namespace in context, up to the budget), ``lora`` /
        ``hybrid`` (consolidated modules; without modules they answer as ``rag`` and
        ``Answer.notes`` says so).
        """
        return self._answerer.ask(self._ns(namespace), question, mode, **options)

    def ask_many(
        self,
        namespace: str | Sequence[str],
        questions: Sequence[str],
        mode: str = "auto",
        *,
        batch_size: int = 16,
        **options: Unpack[AnswerOptions],
    ) -> list[Answer]:
        """Answer many questions at once; ``namespace`` is one name or one per question.

        Each question is routed on its own; generation runs in batches of ``batch_size`` rows,
        each row with its own module (or none), in one forward pass.
        """
        if isinstance(namespace, str):
            nss = [self._ns(namespace)] * (0 if isinstance(questions, str) else len(questions))
        else:
            nss = [self._ns(n) for n in namespace]
        return self._answerer.ask_many(nss, questions, mode, batch_size=batch_size, **options)

    def chat(
        self, namespace: str, messages: Sequence[dict[str, str]], **options: Unpack[ChatOptions]
    ) -> Answer:
        """Answer a conversation (``[{"role", "content"}, ...]``) with the module routed from
        its last user message (``mode="lora"``, the default) or the bare base model
        (``"base"``); no buffer text is added. Without a matching module the base model answers
        (``Answer.notes``). ``options``: ``mode``, ``max_new_tokens``."""
        return self._answerer.chat(self._ns(namespace), messages, **options)

    def recall(self, namespace: str, query: str, *, max_new_tokens: int | None = None) -> Recall:
        """What the namespace's best-matching module recalls for ``query`` (no retrieved text);
        ``Recall.text`` is '' and ``confidence`` 0.0 when no module matches."""
        return self._answerer.recall(self._ns(namespace), query, max_new_tokens=max_new_tokens)

    def route(self, namespace: str, query: str) -> RouteDecision:
        """The routing decision for ``query`` (a ``RouteDecision``: ranked modules, the chosen
        one and why)."""
        return self._answerer.route(self._ns(namespace), query)

    # ---- consolidation (consolidation.service.Consolidator) -----------------------------
    def consolidate(
        self,
        namespace: str | None = None,
        *,
        progress: bool = False,
        **options: Unpack[ConsolidateOptions],
    ) -> list[ConsolidationReport]:
        """Train the buffered records of ``namespace`` (or of every namespace) into modules.

        ``options`` (:class:`~.types.ConsolidateOptions`): ``min_records``, ``max_minutes``,
        ``target``, ``rank``, ``lr``, ``max_steps``, ``mixture``, ``seed``, ... For one namespace
        its errors raise (LockHeldError when another process consolidates it); for ``None``
        each namespace stands alone (status ``"locked"`` or ``"failed"`` in its report).
        """
        ns = self._ns(namespace) if namespace is not None else None
        return self._consolidator.consolidate(ns, progress=progress, **options)

    def forget(
        self, namespace: str, ids: Sequence[str] | None = None, **options: Unpack[ForgetOptions]
    ) -> ForgetReport:
        """Delete records (``ids=[...]`` or ``where={...}``) from the buffer and the modules.

        Each module that held one is removed at once; its other records go back to
        ``buffered`` and, with ``rebuild=True`` (the default), are consolidated again (with the
        :class:`~.types.ConsolidateOptions` among ``options``). ``missing=True`` forgets what the
        modules hold that the buffer lost (the answer to MissingRecordsError). Holds the
        namespace's consolidation lock.
        """
        return self._consolidator.forget(self._ns(namespace), ids, **options)

    def calibrate(
        self, ranks: Sequence[int] = (4, 16), *, progress: bool = False, **options: Any
    ) -> CalibrationReport:
        """Measure how many knowledge tokens a module of each rank holds and save it in the
        config (a ``CalibrationReport``; options: see
        :func:`~lora_memory_plugin.consolidation.capacity.calibrate`)."""
        return self._consolidator.calibrate(ranks, progress=progress, **options)

    def update_config(self, **sections: Mapping[str, Any]) -> StoreConfig:
        """Change saved settings, e.g. ``update_config(consolidation={"mixture": "all"})``:
        validated like the file, written atomically under the store's config lock."""
        return self._store.update_config(**sections)

    # ---- async twins -------------------------------------------------------------------
    aadd_turn = _async_twin(add_turn)
    aadd_turns = _async_twin(add_turns)
    aadd_document = _async_twin(add_document)
    asearch = _async_twin(search)
    aget = _async_twin(get)
    acount = _async_twin(count)
    anamespaces = _async_twin(namespaces)
    astatus = _async_twin(status)
    aask = _async_twin(ask)
    aask_many = _async_twin(ask_many)
    arecall = _async_twin(recall)
    achat = _async_twin(chat)
    aroute = _async_twin(route)
    adelete = _async_twin(delete)
    aupdate_metadata = _async_twin(update_metadata)
    aconsolidate = _async_twin(consolidate)
    aforget = _async_twin(forget)

    # ---- advanced use ------------------------------------------------------------------
    @property
    def routing(self) -> RoutingIndex:
        """The :class:`~lora_memory_plugin.routing.RoutingIndex`."""
        return self._store.routing

    @property
    def buffer(self) -> Buffer:
        """The underlying :class:`~lora_memory_plugin.store.buffer.Buffer`."""
        return self._store.buffer

    def generator(self) -> Generator:
        """The loaded base-model generator (loads on first use)."""
        return self._store.generator()

    _ns = staticmethod(validate_namespace)
