"""``LoRAMemory``: the one core API every CLI command, integration and the service go through.

A thin facade over the :class:`._store.Store` that :meth:`LoRAMemory.open` builds: it validates
the namespace (the tenant boundary) and hands each call to ``store.service.Records`` (the
buffer), ``generation.service.Answerer`` or ``consolidation.service.Consolidator``.
Nothing below imports this module."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._async import async_twin
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
    Unpack,
)

if TYPE_CHECKING:
    from .consolidation.capacity import CalibrationReport
    from .generation.backend import Generator
    from .registry.modules import ModuleManifest
    from .routing.index import RoutingIndex
    from .routing.router import RouteDecision
    from .store.buffer import Buffer


class LoRAMemory:
    """A memory store: a Chroma buffer searchable at once, answered from by a local model.

    Open one with :meth:`open`; it creates the store on first use. Its attributes ``path``,
    ``chroma_url``, ``embedder``, ``buffer`` (the :class:`~.store.buffer.Buffer`) and ``routing``
    (the :class:`~.routing.RoutingIndex`) are the opened store's, for advanced use.

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
        self.buffer: Buffer = store.buffer
        self.routing: RoutingIndex = store.routing
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
        ``options``: :class:`~.types.OpenOptions` (create, base_model, embedder, chroma_database).

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
        ``fields`` (:class:`~.types.TurnFields`): role ('user'), session_id, metadata,
        created_at."""
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
        """Chunk a document on token boundaries (with overlap) and store the chunks; returns a
        record id per chunk, in order. ``fields``: :class:`~.types.DocumentFields`."""
        return self._records.add_document(self._ns(namespace), text, **fields)

    def delete(self, namespace: str, ids: Sequence[str]) -> int:
        """Delete records from the buffer and their routing keys now; returns how many existed.

        A consolidated record stays in its module until the next ``consolidate`` quarantines
        that module and retrains its other records (MissingRecordsError, changing nothing, when
        over half of what the modules hold is gone). :meth:`forget` removes modules at once."""
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
        ``filters`` (:class:`~.types.SearchFilters`): kind, session_id, role, status, since,
        until (datetime or epoch seconds) and a raw Chroma ``where``."""
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
        """Counts per namespace (records, modules, quarantined); is the base model ready."""
        return self._store.status()

    def modules(self, namespace: str) -> list[ModuleManifest]:
        """The committed LoRA modules of ``namespace`` (manifests, oldest first)."""
        return list_modules(self.path, self._ns(namespace))

    # ---- answering (generation.service.Answerer) ----------------------------------------
    def ask(
        self, namespace: str, question: str, mode: str = "auto", **options: Unpack[AnswerOptions]
    ) -> Answer:
        """Answer ``question`` from the namespace's memory (``options``: k, max_new_tokens).

        Modes (:data:`~.types.Mode`): ``auto`` picks lora, hybrid or rag per question from
        routing confidence and the module's measured agreement; ``base`` (model alone), ``rag``
        (top-k hits in context), ``icl`` (the whole namespace in context), ``lora`` / ``hybrid``
        (the routed module; without one they answer as rag and ``Answer.notes`` says so)."""
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
        """Answer many questions at once; ``namespace`` is one name or one per question. Each
        is routed on its own; a batch of ``batch_size`` rows, each with its own module (or
        none), runs in one forward pass."""
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
        """The routing decision for ``query``: ranked modules, the chosen one and why."""
        return self._answerer.route(self._ns(namespace), query)

    # ---- consolidation (consolidation.service.Consolidator) -----------------------------
    def consolidate(
        self,
        namespace: str | None = None,
        *,
        progress: bool = False,
        **options: Unpack[ConsolidateOptions],
    ) -> list[ConsolidationReport]:
        """Train the buffered records of ``namespace`` (or of every one) into modules; options:
        :class:`~.types.ConsolidateOptions`. For one namespace errors raise (LockHeldError if
        another process consolidates it); for ``None`` each namespace stands alone (status
        ``"locked"`` or ``"failed"`` in its report)."""
        ns = self._ns(namespace) if namespace is not None else None
        return self._consolidator.consolidate(ns, progress=progress, **options)

    def forget(
        self, namespace: str, ids: Sequence[str] | None = None, **options: Unpack[ForgetOptions]
    ) -> ForgetReport:
        """Delete records (``ids=[...]`` or ``where={...}``) from the buffer and the modules.

        Each module that held one is removed at once; its other records go back to buffered
        and, with ``rebuild=True`` (default), are consolidated again. ``missing=True`` forgets
        what the modules hold that the buffer lost (the answer to MissingRecordsError)."""
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

    def generator(self) -> Generator:
        """The loaded base-model generator (loads on first use)."""
        return self._store.generator()

    # ---- async twins -------------------------------------------------------------------
    aadd_turn = async_twin(add_turn)
    aadd_turns = async_twin(add_turns)
    aadd_document = async_twin(add_document)
    asearch = async_twin(search)
    aget = async_twin(get)
    acount = async_twin(count)
    anamespaces = async_twin(namespaces)
    astatus = async_twin(status)
    aask = async_twin(ask)
    aask_many = async_twin(ask_many)
    arecall = async_twin(recall)
    achat = async_twin(chat)
    aroute = async_twin(route)
    adelete = async_twin(delete)
    aupdate_metadata = async_twin(update_metadata)
    aconsolidate = async_twin(consolidate)
    aforget = async_twin(forget)

    _ns = staticmethod(validate_namespace)
