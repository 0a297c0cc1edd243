"""``LoRAMemoryRetriever``: buffer hits and the parametric recollection as LangChain Documents."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from lora_memory_plugin import UnknownNamespaceError
from lora_memory_plugin.integration import MemoryArg, MemoryBacked, PathArg

from ._common import arecall, recall

if TYPE_CHECKING:
    from lora_memory_plugin import Hit, LoRAMemory, Recall

RetrieverMode = Literal["buffer", "parametric", "hybrid"]
MODES: tuple[str, ...] = ("buffer", "parametric", "hybrid")
SEARCH_FILTERS = frozenset({"kind", "session_id", "role", "status", "since", "until", "where"})


class LoRAMemoryRetriever(MemoryBacked, BaseRetriever):
    """Retrieve from one lora-memory namespace: buffer hits, the parametric recollection, or both.

    Modes:
        - ``buffer``: semantic search of the buffer (every turn and document chunk written so
          far); each hit is a Document with its record metadata plus ``id``, ``score`` (cosine
          similarity) and ``memory="buffer"``.
        - ``parametric``: what the namespace's consolidated LoRA modules recall
          (``LoRAMemory.recall``): at most one Document, with ``memory="parametric"``,
          ``modules`` (the module ids that answered) and ``confidence``. None when no module
          answers (e.g. nothing consolidated yet).
        - ``hybrid`` (default): the recollection first (when there is one), then buffer hits.

    ``k`` is the total number of Documents returned: in hybrid mode the recollection takes one
    of the ``k`` places.

    Setup:
        .. code-block:: bash

            pip install -e integrations/langchain   # langchain-lora-memory

    Instantiate:
        .. code-block:: python

            from langchain_lora_memory import LoRAMemoryRetriever

            retriever = LoRAMemoryRetriever(path="./memory", namespace="user-42", k=4)

    Add and search:
        .. code-block:: python

            retriever.memory.add_turn("user-42", "My locker code is 4471.", session_id="s1")
            docs = retriever.invoke("What is my locker code?")
            docs[0].page_content, docs[0].metadata["score"]

    Async:
        .. code-block:: python

            docs = await retriever.ainvoke("locker code", k=2)

    Filters (``kind``, ``session_id``, ``role``, ``status``, ``since``, ``until``, ``where``)
    go in ``search_kwargs`` or as keyword arguments of ``invoke``, like ``k`` and ``mode``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    namespace: str
    """The memory namespace searched (e.g. a user id)."""
    k: int = Field(default=4, ge=1, le=1000)
    """How many Documents to return at most."""
    mode: RetrieverMode = "hybrid"
    """``buffer``, ``parametric`` or ``hybrid``."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Buffer filters passed to ``LoRAMemory.search`` (kind, session_id, role, status, ...)."""

    _memory: LoRAMemory = PrivateAttr()

    def __init__(self, *, memory: MemoryArg = None, path: PathArg = None, **data: Any) -> None:
        search_kwargs = data.get("search_kwargs")  # checked before the store is opened
        unknown = set(search_kwargs) - SEARCH_FILTERS if isinstance(search_kwargs, Mapping) else ()
        if unknown:
            raise ValueError(
                f"search_kwargs has unknown keys {sorted(unknown)}; "
                f"supported: {', '.join(sorted(SEARCH_FILTERS))}"
            )
        super().__init__(memory=memory, path=path, **data)

    # ---- helpers -----------------------------------------------------------------------
    def _options(self, kwargs: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        k = kwargs.pop("k", self.k)
        mode = kwargs.pop("mode", self.mode)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        filters = {**self.search_kwargs, **kwargs}
        unknown = set(filters) - SEARCH_FILTERS
        if unknown:
            raise ValueError(
                f"unknown retriever arguments {sorted(unknown)}; supported: k, mode, "
                f"{', '.join(sorted(SEARCH_FILTERS))}"
            )
        return k, mode, filters

    def _documents(self, rec: Recall | None, hits: list[Hit], k: int) -> list[Document]:
        docs: list[Document] = []
        if rec is not None and rec.text.strip():
            docs.append(recall_document(rec, self.namespace))
        docs.extend(hit_document(h) for h in hits[: k - len(docs)])
        return docs

    # ---- retrieval ---------------------------------------------------------------------
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, mode, filters = self._options(dict(kwargs))
        try:
            rec = recall(self._memory, self.namespace, query) if mode != "buffer" else None
            hits = (
                self._memory.search(self.namespace, query, k, **filters)
                if mode != "parametric"
                else []
            )
        except UnknownNamespaceError:
            return []  # nothing written to this namespace yet
        return self._documents(rec, hits, k)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, mode, filters = self._options(dict(kwargs))

        async def none() -> None:
            return None

        async def no_hits() -> list[Hit]:
            return []

        try:
            rec, hits = await asyncio.gather(
                arecall(self._memory, self.namespace, query) if mode != "buffer" else none(),
                self._memory.asearch(self.namespace, query, k, **filters)
                if mode != "parametric"
                else no_hits(),
            )
        except UnknownNamespaceError:
            return []
        return self._documents(rec, hits, k)


def hit_document(hit: Hit) -> Document:
    """A buffer hit as a Document (record metadata plus id, score and ``memory="buffer"``)."""
    meta = {**hit.metadata, "id": hit.id, "score": hit.score, "memory": "buffer"}
    return Document(page_content=hit.text, id=hit.id, metadata=meta)


def recall_document(rec: Recall, namespace: str) -> Document:
    """A recollection as a Document naming the modules that produced it and the confidence."""
    meta = {
        "memory": "parametric",
        "namespace": namespace,
        "modules": list(rec.modules),
        "confidence": rec.confidence,
    }
    return Document(page_content=rec.text, metadata=meta)
