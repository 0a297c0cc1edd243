"""``LoRAMemory``: the one core API every CLI command and integration goes through."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._store import Store
from ._validate import MAX_QUERY_CHARS, check_k, check_time
from .config import (
    StoreConfig,
)
from .errors import (
    InvalidInputError,
    InvalidTypeError,
    LockHeldError,
    LoraMemoryError,
    StoreIOError,
)
from .types import (
    Answer,
    ConsolidationReport,
    ForgetReport,
    Hit,
    NamespaceStatus,
    Recall,
    Record,
    StoreStatus,
)

if TYPE_CHECKING:
    from .consolidation.engine import ConsolidationOptions
    from .generation.backend import Generator

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _async_twin(fn: Callable[P, R]) -> Callable[P, Any]:
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
        self._store = store
        self.path = store.path
        self.chroma_url = store.chroma_url
        self.embedder = self._store.embedder
        self._buffer = self._store.buffer
        self._routing = self._store.routing

    @property
    def config(self) -> StoreConfig:
        """The store's settings (``lora-memory.toml``), as of the last open or update."""
        return self._store.config

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        chroma_url: str | None = None,
        *,
        create: bool = True,
        base_model: str | None = None,
        embedder: str | None = None,
        chroma_database: str | None = None,
    ) -> LoRAMemory:
        """Open (or create) the store at ``path``.

        Args:
            path: the store directory (created if missing and ``create``).
            chroma_url: use a Chroma server (``http://host:port``) instead of embedded Chroma.
                Saved in a new store's config; for an existing store it overrides for this
                process only.
            create: create a missing store; False raises StoreError instead.
            base_model: for a new store, 'default', a Hugging Face id or a local path.
            embedder: for a new store, 'default' or a local sentence-encoder dir.
            chroma_database: for a new store on a Chroma server, the database to use (created
                if missing); unrelated stores sharing one server must use distinct databases.

        Raises:
            StoreError: ``path`` is a file, or a non-empty directory that is not a store.
            ConfigError: the store's ``lora-memory.toml`` is unreadable or invalid.
            BackendError: the Chroma server cannot be reached.
        """
        return cls(
            Store.open(
                path,
                chroma_url,
                create=create,
                base_model=base_model,
                embedder=embedder,
                chroma_database=chroma_database,
            )
        )

    @classmethod
    def resolve(
        cls,
        memory: LoRAMemory | None = None,
        path: str | Path | None = None,
        *,
        owner: str = "",
    ) -> LoRAMemory:
        """The store a framework adapter works on: ``memory=`` (open) or ``path=`` (opened
        here), exactly one. ``owner`` (a class name) prefixes the error messages.

        Raises:
            InvalidInputError: both or neither were given.
            InvalidTypeError: ``memory`` is not a LoRAMemory.
        """
        who = f"{owner}: " if owner else ""
        if memory is not None and path is not None:
            raise InvalidInputError(
                f"{who}pass exactly one of memory= (an open LoRAMemory) or path= (a store "
                "directory), not both; got both"
            )
        if memory is None and path is None:
            raise InvalidInputError(
                f"{who}pass memory= (an open LoRAMemory) or path= (a store directory, e.g. "
                "'./memory'): exactly one of memory= or path= is needed, got neither"
            )
        if memory is not None:
            if not isinstance(memory, LoRAMemory):
                raise InvalidTypeError(
                    f"{who}memory= must be a LoRAMemory, got {type(memory).__name__}; open one "
                    "with LoRAMemory.open(path)"
                )
            return memory
        return cls.open(path)  # type: ignore[arg-type]

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
    def add_turn(
        self,
        namespace: str,
        content: str,
        *,
        role: str = "user",
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_at: float | None = None,
    ) -> str:
        """Store one conversation turn; returns its record id (the same id for a duplicate).

        Example:
            >>> mem.add_turn("user-42", "I moved to Lyon.", session_id="s1")  # doctest: +SKIP
            't-...'
        """
        rec = self._turn_record(content, role, session_id, metadata, created_at)
        return self._buffer.add(self._ns(namespace), [rec])[0]

    def add_turns(
        self,
        namespace: str,
        turns: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Store many turns, batched (the fast path: batched embedding, one write per batch).

        Each turn is a mapping with ``content`` and optional ``role``, ``session_id``,
        ``metadata``, ``created_at``. Every turn is validated before anything is written, so a
        bad turn rejects the whole call and stores nothing. ``progress(n)`` is called after each
        batch with the number of turns it held.
        """
        ns = self._ns(namespace)
        if isinstance(turns, (str, bytes, Mapping)) or not isinstance(turns, Iterable):
            raise InvalidTypeError("turns must be an iterable of mappings, e.g. [{'content': ...}]")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        records = []
        for i, t in enumerate(turns):
            if not isinstance(t, Mapping):
                raise InvalidTypeError(f"turns[{i}] must be a mapping, got {type(t).__name__}")
            unknown = set(t) - {"content", "role", "session_id", "metadata", "created_at"}
            if unknown:
                raise InvalidInputError(f"turns[{i}] has unknown keys {sorted(unknown)}")
            if "content" not in t:
                raise InvalidInputError(f"turns[{i}] has no 'content'")
            try:
                records.append(
                    self._turn_record(
                        t["content"],
                        t.get("role", "user"),
                        t.get("session_id"),
                        t.get("metadata"),
                        t.get("created_at"),
                    )
                )
            except LoraMemoryError as e:
                raise type(e)(f"turns[{i}]: {e}") from e
        ids: list[str] = []
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            ids.extend(self._buffer.add(ns, batch))
            if progress is not None:
                progress(len(batch))
        return ids

    def add_document(
        self,
        namespace: str,
        text: str,
        *,
        source: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_at: float | None = None,
    ) -> list[str]:
        """Chunk a document on token boundaries (with overlap) and store the chunks.

        Returns one record id per chunk, in document order.
        """
        from .store.chunking import chunk_text
        from .store.records import NewRecord, check_extra, check_label, check_text

        ns = self._ns(namespace)
        limit = self.config.buffer.max_document_chars
        text = check_text(
            text, what="document text", limit=limit, hint="Split it into several documents."
        )
        src = check_label(source, what="source")
        sid = check_label(session_id, what="session_id")
        extra = check_extra(dict(metadata) if isinstance(metadata, Mapping) else metadata)
        ts = check_time(created_at)
        bc = self.config.buffer
        chunks = chunk_text(text, self.embedder.tokenizer(), bc.chunk_tokens, bc.chunk_overlap)
        if not chunks:
            raise InvalidInputError("document text has no tokens the embedder can read")
        records = [
            NewRecord(
                c.text,
                "document",
                source=src,
                session_id=sid,
                chunk_index=c.index,
                created_at=ts,
                extra=extra,
            )
            for c in chunks
        ]
        return self._buffer.add(ns, records)

    # ---- reads -------------------------------------------------------------------------
    def search(
        self,
        namespace: str,
        query: str,
        k: int = 5,
        *,
        kind: str | None = None,
        session_id: str | None = None,
        role: str | None = None,
        status: str | None = None,
        since: Any = None,
        until: Any = None,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Semantic search of the buffer (RAG). Best first; ``score`` is cosine similarity.

        Filters: ``kind`` ('turn' / 'document'), ``session_id``, ``role``, ``status``
        ('buffered' / 'consolidated'), ``since`` / ``until`` (datetime or epoch seconds on
        ``created_at``) and a raw Chroma ``where``.
        """
        from .store.filters import build_where
        from .store.records import check_text

        ns = self._ns(namespace)
        query = check_text(query, what="query", limit=MAX_QUERY_CHARS)
        k = check_k(k)
        w = build_where(
            kind=kind,
            session_id=session_id,
            role=role,
            status=status,
            since=since,
            until=until,
            where=where,
        )
        return self._buffer.search(ns, query, k, w)

    def get(
        self,
        namespace: str,
        ids: list[str] | None = None,
        *,
        kind: str | None = None,
        session_id: str | None = None,
        status: str | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Record]:
        """Records by id (in the given order; RecordNotFoundError if any is missing) or by
        filter (``kind``, ``session_id``, ``status``, or a raw Chroma ``where`` on metadata)."""
        from .store.filters import build_where

        ns = self._ns(namespace)
        if ids is not None and (
            isinstance(ids, str)
            or not isinstance(ids, (list, tuple))
            or not all(isinstance(i, str) for i in ids)
        ):
            raise InvalidTypeError("ids must be a list of str record ids")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidInputError(f"limit must be an int >= 1, got {limit!r}")
        if offset is not None and (
            isinstance(offset, bool) or not isinstance(offset, int) or offset < 0
        ):
            raise InvalidInputError(f"offset must be an int >= 0, got {offset!r}")
        w = build_where(kind=kind, session_id=session_id, status=status, where=where)
        return self._buffer.get(ns, ids=ids, where=w, limit=limit, offset=offset)

    def delete(self, namespace: str, ids: Sequence[str]) -> int:
        """Delete records from the buffer now, and the routing keys copied from their text;
        returns how many existed.

        A deleted record that was consolidated still lives in its module until the next
        ``consolidate`` of the namespace, which quarantines that module (nothing answers from
        it; its files stay on disk, listed by :meth:`status`) and retrains its other records.
        That run cannot tell a deletion from a lost buffer, so when more than half of what the
        modules hold is missing (and at least a few records) it changes nothing and raises
        MissingRecordsError.
        :meth:`forget` is the deliberate way: it deletes the modules at once (and waits for no
        cron job).
        """
        ns = self._ns(namespace)
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
            raise InvalidTypeError("ids must be a list of str record ids")
        if not self._buffer.has_namespace(ns):
            return 0
        unique = list(dict.fromkeys(ids))
        deleted = int(self._buffer.delete(ns, unique))
        self._routing.delete_record_keys(ns, unique)
        return deleted

    def update_metadata(self, namespace: str, ids: Sequence[str], metadata: dict[str, Any]) -> None:
        """Set user metadata keys on existing records (the reserved keys — status, module_id,
        kind, role, ... — stay lora-memory's). RecordNotFoundError if an id is missing."""
        from .store.records import check_extra

        ns = self._ns(namespace)
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
            raise InvalidTypeError("ids must be a list of str record ids")
        patch = check_extra(metadata)
        self.get(ns, list(ids))  # raises RecordNotFoundError naming the missing ids
        if patch:
            self._buffer.update_metadata(ns, list(ids), patch)

    def count(
        self,
        namespace: str,
        *,
        kind: str | None = None,
        session_id: str | None = None,
        status: str | None = None,
    ) -> int:
        """How many records the namespace holds (optionally filtered)."""
        from .store.filters import build_where

        w = build_where(kind=kind, session_id=session_id, status=status)
        return self._buffer.count(self._ns(namespace), w)

    def namespaces(self) -> list[str]:
        """Every namespace with records in this store."""
        return self._buffer.namespaces()

    def status(self) -> StoreStatus:
        """Counts per namespace (records, modules, quarantined modules) and whether the base
        model is ready."""
        from .registry import modules as registry

        nss = []
        for ns in self.namespaces():
            total = self._buffer.count(ns)
            buffered = self._buffer.count(ns, {"status": "buffered"})
            turns = self._buffer.count(ns, {"kind": "turn"})
            nss.append(
                NamespaceStatus(
                    ns,
                    total,
                    buffered,
                    total - buffered,
                    turns,
                    total - turns,
                    modules=len(registry.list_modules(self.path, ns)),
                    quarantined=tuple(registry.list_quarantined(self.path, ns)),
                )
            )
        return StoreStatus(
            path=str(self.path),
            backend=self.chroma_url or "embedded",
            base_model=self.config.models.base_model,
            embedder=self.config.models.embedder,
            namespaces=tuple(nss),
            base_model_ready=self._store.base_model_ready(),
        )

    # ---- answering ---------------------------------------------------------------------
    def ask(
        self,
        namespace: str,
        question: str,
        mode: str = "auto",
        *,
        k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Answer:
        """Answer ``question`` from this namespace's memory.

        Modes: ``base`` (model alone), ``rag`` (top-k buffer hits in context), ``icl`` (the whole
        namespace in context, up to the budget), ``lora`` / ``hybrid`` (consolidated modules;
        until a namespace has modules they fall back to ``rag`` and ``Answer.notes`` says so).
        """
        from .generation.answer import answer

        ns = self._ns(namespace)
        return answer(self._store, ns, question, mode, k=k, max_new_tokens=max_new_tokens)

    def ask_many(
        self,
        namespace: str | Sequence[str],
        questions: Sequence[str],
        mode: str = "auto",
        *,
        k: int | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 16,
    ) -> list[Answer]:
        """Answer many questions at once; ``namespace`` is one name or one per question.

        Each question is routed on its own; generation then runs in batches of ``batch_size``
        rows where every row carries its own module (or none), so questions routed to different
        modules or namespaces share one forward pass instead of one adapter swap each.
        """
        from .generation.answer import answer_many

        if isinstance(questions, str):
            raise InvalidTypeError("questions must be a list of str, not one str")
        if isinstance(namespace, str):
            namespaces = [self._ns(namespace)] * len(questions)
        else:
            namespaces = [self._ns(n) for n in namespace]
            if len(namespaces) != len(questions):
                raise InvalidInputError(
                    f"{len(namespaces)} namespaces for {len(questions)} questions: give one "
                    "namespace, or one per question"
                )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        return answer_many(
            self._store,
            namespaces,
            questions,
            mode,
            k=k,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )

    def chat(
        self,
        namespace: str,
        messages: Sequence[dict[str, str]],
        *,
        mode: str = "lora",
        max_new_tokens: int | None = None,
    ) -> Answer:
        """Answer a whole conversation (``[{"role": ..., "content": ...}, ...]``) with the module
        routed from its last user message (``mode="lora"``) or the bare base model (``"base"``).

        For chat-model adapters (LangChain, LlamaIndex). No buffer text is added; the store's
        system prompt is sent when the conversation has none. An unknown namespace, or no
        matching module, answers with the base model and says so in ``Answer.notes``.
        """
        from .generation.answer import chat

        return chat(self._store, self._ns(namespace), messages, mode, max_new_tokens=max_new_tokens)

    def recall(self, namespace: str, query: str, *, max_new_tokens: int | None = None) -> Recall:
        """What the consolidated modules of ``namespace`` recall for ``query``.

        The query is routed to the namespace's best-matching module and answered by the base
        model with that module and no retrieved text. ``Recall.text`` is '' and ``confidence``
        0.0 when no module matches (nothing consolidated, or nothing close enough).
        """
        from .generation.answer import recall

        return recall(self._store, self._ns(namespace), query, max_new_tokens=max_new_tokens)

    def route(self, namespace: str, query: str) -> Any:
        """The routing decision for ``query``: ranked modules (best-key score, confidence,
        votes), the chosen module and the reason (a ``RouteDecision``)."""
        from .generation.answer import route_question
        from .store.records import check_text

        ns = self._ns(namespace)
        query = check_text(query, what="query", limit=MAX_QUERY_CHARS)
        return route_question(self._store, ns, query)

    # ---- consolidation -----------------------------------------------------------------
    def consolidate(
        self, namespace: str | None = None, *, progress: bool = False, **options: Any
    ) -> list[ConsolidationReport]:
        """Train the buffered records of ``namespace`` (or of every namespace) into LoRA modules.

        Options: ``min_records``, ``max_minutes``, ``target`` (probe exact match the gate
        needs), ``rank``, ``lr``, ``max_steps``, ``seed``. For one namespace, raises
        LockHeldError when another process consolidates it, and any other error of its run
        (e.g. MissingRecordsError). With ``namespace=None`` each namespace stands alone: one
        another process consolidates is skipped and reported with status ``"locked"``, one
        whose run raised is reported with status ``"failed"`` (the error in its notes), and
        the others are consolidated all the same.
        """
        from .consolidation.engine import ConsolidationOptions

        try:
            opts = ConsolidationOptions(**options)
        except TypeError as e:
            raise InvalidInputError(f"unknown consolidation option: {e}") from e
        targets = [self._ns(namespace)] if namespace is not None else self.namespaces()
        if namespace is not None and not self._buffer.has_namespace(namespace):
            from .errors import UnknownNamespaceError

            raise UnknownNamespaceError(f"namespace {namespace!r} has no records in this store")
        if namespace is not None:
            return [self._consolidate_one(targets[0], opts, progress)]
        return [self._consolidate_one_of_all(ns, opts, progress) for ns in targets]

    def _consolidate_one(
        self, ns: str, opts: ConsolidationOptions, progress: bool
    ) -> ConsolidationReport:
        """One namespace's consolidation; a disk failure under it raises StoreIOError."""
        from .consolidation.engine import consolidate_namespace

        try:
            return consolidate_namespace(self._store, ns, opts, progress=progress)
        except OSError as e:
            raise _io_error("consolidation", ns, e) from e

    def _consolidate_one_of_all(
        self, ns: str, opts: ConsolidationOptions, progress: bool
    ) -> ConsolidationReport:
        """One namespace of ``consolidate(None)``: its failure is its report, not the run's.

        A cron job consolidates every namespace in one run; a record that breaks training, or a
        namespace whose buffer lost its records, must not starve the namespaces after it.
        """
        t0 = time.perf_counter()
        try:
            return self._consolidate_one(ns, opts, progress)
        except LockHeldError as e:  # another process is consolidating it: not a failure
            return ConsolidationReport(ns, "locked", notes=(str(e),))
        except Exception as e:  # not KeyboardInterrupt / SystemExit: those stop the run
            logger.error("consolidation of %r failed; going on with the others", ns, exc_info=True)
            return ConsolidationReport(
                ns, "failed", seconds=time.perf_counter() - t0, notes=(f"{type(e).__name__}: {e}",)
            )

    def forget(
        self,
        namespace: str,
        ids: Sequence[str] | None = None,
        *,
        where: dict[str, Any] | None = None,
        missing: bool = False,
        rebuild: bool = True,
        progress: bool = False,
        **options: Any,
    ) -> ForgetReport:
        """Delete records (``ids=[...]`` or a metadata filter ``where={...}``) from the buffer
        and from the parametric memory.

        Every module that held one of them is removed at once, its other records are put back
        in the buffer's ``buffered`` state and, with ``rebuild=True`` (default), consolidated
        again (``options`` as for :meth:`consolidate`), so only the forgotten facts are gone.
        ``missing=True`` (instead of ids/where) forgets the records the modules hold that the
        buffer no longer has: the deliberate answer to a MissingRecordsError, once the buffer
        is known to be the right one. Modules listing other missing records are quarantined;
        when those are a mass loss they are left alone, not rebuilt, and a note says so.
        Holds the namespace's consolidation lock (LockHeldError while a consolidation runs).
        Other namespaces are never touched.
        """
        from .consolidation.forget import forget

        ns = self._ns(namespace)
        if not self._buffer.has_namespace(ns):
            from .errors import UnknownNamespaceError

            raise UnknownNamespaceError(f"namespace {namespace!r} has no records in this store")
        try:
            return forget(
                self._store,
                ns,
                ids,
                where,
                missing=missing,
                rebuild=rebuild,
                progress=progress,
                options=options,
            )
        except OSError as e:
            raise _io_error("forget", ns, e) from e

    def generator_if_loaded_forget(self, module_id: str) -> None:
        """Unload ``module_id`` from the generator if the generator is loaded (internal)."""
        self._store.generator_if_loaded_forget(module_id)

    def calibrate(
        self, ranks: Sequence[int] = (4, 16), *, progress: bool = False, **options: Any
    ) -> Any:
        """Measure how many knowledge tokens a module of each rank holds; save it in the config.

        A PhoneBook-style sweep on the configured base model (see
        :func:`~lora_memory_plugin.consolidation.capacity.calibrate` for ``start_facts``,
        ``max_facts``, ``target``, ``max_epochs``, ``max_minutes``, ``seed``, ``save``).
        Consolidation then packs records into modules under that capacity. Returns a
        ``CalibrationReport``.
        """
        from .consolidation.capacity import calibrate

        try:
            return calibrate(self._store, ranks, progress=progress, **options)
        except TypeError as e:
            raise InvalidInputError(f"unknown calibration option: {e}") from e

    def update_config(self, **sections: Mapping[str, Any]) -> StoreConfig:
        """Change saved settings, e.g. ``update_config(consolidation={"mixture": "all"})``.

        Validated like the file (ConfigError names a bad key), written atomically under the
        store's config lock, re-read first so a concurrent update is not lost.
        """
        return self._store.update_config(**sections)

    def modules(self, namespace: str) -> list[Any]:
        """The committed LoRA modules of ``namespace`` (manifests, oldest first)."""
        from .registry.modules import list_modules

        return list_modules(self.path, self._ns(namespace))

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

    # ---- internals ---------------------------------------------------------------------
    @property
    def routing(self) -> Any:
        """The :class:`~lora_memory_plugin.routing.RoutingIndex` (advanced use)."""
        return self._routing

    @property
    def buffer(self) -> Any:
        """The underlying :class:`~lora_memory_plugin.store.buffer.Buffer` (advanced use)."""
        return self._buffer

    def _ns(self, namespace: object) -> str:
        from .store.namespaces import validate_namespace

        return validate_namespace(namespace)

    def _turn_record(
        self,
        content: object,
        role: object,
        session_id: object,
        metadata: object,
        created_at: object,
    ) -> Any:
        from .store.records import ROLES, NewRecord, check_extra, check_label, check_text

        text = check_text(
            content,
            what="turn content",
            limit=self.config.buffer.max_turn_chars,
            hint="Store long texts with add_document(), which chunks them.",
        )
        r = check_label(role, what="role", allowed=ROLES)
        sid = check_label(session_id, what="session_id")
        extra = check_extra(dict(metadata) if isinstance(metadata, Mapping) else metadata)
        return NewRecord(
            text, "turn", role=r, session_id=sid, created_at=check_time(created_at), extra=extra
        )

    def generator(self) -> Generator:
        """The loaded base-model generator (loads on first use)."""
        return self._store.generator()


def _io_error(what: str, namespace: str, e: OSError) -> StoreIOError:
    """A disk failure under a consolidation or forget, as the typed error callers catch."""
    return StoreIOError(
        f"{what} of {namespace!r} stopped: the store's disk failed ({e.strerror or e}); nothing "
        "stored was lost (a half-written module is removed, records keep their state): free "
        f"space or fix the disk, then run the {what} again",
        e.errno,
    )
