"""``LoRAMemoryRetriever``: one lora-memory namespace as a LlamaIndex retriever.

Returns the parametric recollection of the namespace's consolidated LoRA modules
(``LoRAMemory.recall``) as a node, followed by the buffer's search hits (``LoRAMemory.search``),
so a ``RetrieverQueryEngine`` answers from both tiers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from lora_memory_plugin import (
    Hit,
    InvalidInputError,
    LoRAMemory,
    Recall,
    UnknownNamespaceError,
)
from lora_memory_plugin.integration import MemoryBacked, check_namespace

logger = logging.getLogger(__name__)

TIER_KEY = "memory_tier"  # "parametric" (recalled by modules) or "buffer" (a stored record)
# Metadata the LLM sees next to a node's text; the rest (ids, hashes, timestamps) is kept out.
LLM_METADATA_KEYS = ("source", "role")


class LoRAMemoryRetriever(MemoryBacked, BaseRetriever):
    """Retrieve from one namespace of a lora-memory store: recollection + buffer hits.

    The first node (when the namespace's modules answer) is the parametric recollection: its
    text is ``Recall.text``, its score the routing confidence, its metadata ``memory_tier:
    "parametric"``, ``modules`` (the module ids) and ``namespace``. Then come the buffer hits,
    best first: node id = record id, score = cosine similarity, metadata = the record's
    (``kind``, ``role``, ``session_id``, ``source``, ``status``, ``module_id``, ...) plus
    ``memory_tier: "buffer"``.

    Setup:
        ``pip install llama-index-retrievers-lora-memory``

    Example:
        >>> from llama_index.core.query_engine import RetrieverQueryEngine
        >>> from llama_index.retrievers.lora_memory import LoRAMemoryRetriever
        >>> retriever = LoRAMemoryRetriever(path="./memory", namespace="handbook")  # doctest: +SKIP
        >>> nodes = retriever.retrieve("Which extension is security?")  # doctest: +SKIP
        >>> engine = RetrieverQueryEngine.from_args(retriever, llm=llm)  # doctest: +SKIP
        >>> print(engine.query("Which extension is security?"))  # doctest: +SKIP

    Args:
        memory: an open ``LoRAMemory``; or
        path: a store directory (opened here). Exactly one of the two.
        namespace: the namespace to retrieve from.
        similarity_top_k: buffer hits to return.
        include_recall: add the recollection node (``LoRAMemory.recall``).
        include_buffer: add the buffer hits (``LoRAMemory.search``).
        min_score: buffer hits below this cosine similarity are dropped; None uses the store's
            ``generation.rag_min_score``.
        min_confidence: a recollection below this confidence is dropped.
        search_kwargs: filters passed to ``LoRAMemory.search`` (``kind``, ``session_id``,
            ``role``, ``status``, ``since``, ``until``, ``where``).
    """

    def __init__(
        self,
        *,
        memory: LoRAMemory | None = None,
        path: str | Path | None = None,
        namespace: str,
        similarity_top_k: int = 4,
        include_recall: bool = True,
        include_buffer: bool = True,
        min_score: float | None = None,
        min_confidence: float = 0.0,
        search_kwargs: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.namespace = check_namespace(namespace)
        if not include_recall and not include_buffer:
            raise InvalidInputError(
                "include_recall and include_buffer are both False: nothing to retrieve"
            )
        self.similarity_top_k = similarity_top_k
        self.include_recall = include_recall
        self.include_buffer = include_buffer
        self.min_score = min_score
        self.min_confidence = min_confidence
        self.search_kwargs = dict(search_kwargs or {})
        super().__init__(
            memory=memory, path=path, callback_manager=callback_manager, verbose=verbose
        )

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        mem, ns, query = self._memory, self.namespace, query_bundle.query_str
        try:
            recall = mem.recall(ns, query) if self.include_recall else None
            hits = self._search(query) if self.include_buffer else []
        except UnknownNamespaceError:
            logger.debug("namespace %r has no records yet: nothing retrieved", ns)
            return []
        return self._to_nodes(query, recall, hits)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        mem, ns, query = self._memory, self.namespace, query_bundle.query_str
        try:
            recall, hits = await asyncio.gather(
                mem.arecall(ns, query) if self.include_recall else _value(None),
                asyncio.to_thread(self._search, query) if self.include_buffer else _value([]),
            )
        except UnknownNamespaceError:
            logger.debug("namespace %r has no records yet: nothing retrieved", ns)
            return []
        return self._to_nodes(query, recall, hits)

    def _search(self, query: str) -> list[Hit]:
        hits = self._memory.search(
            self.namespace, query, k=self.similarity_top_k, **self.search_kwargs
        )
        floor = self.min_score
        if floor is None:
            floor = self._memory.config.generation.rag_min_score
        return [h for h in hits if h.score >= floor]

    def _to_nodes(self, query: str, recall: Recall | None, hits: list[Hit]) -> list[NodeWithScore]:
        nodes = []
        if recall is not None and recall.text.strip() and recall.confidence >= self.min_confidence:
            nodes.append(recall_node(self.namespace, query, recall))
        nodes.extend(hit_node(h) for h in hits)
        return nodes


def recall_node(namespace: str, query: str, recall: Recall) -> NodeWithScore:
    """The recollection of ``namespace``'s modules for ``query`` as a scored node."""
    digest = hashlib.sha256(f"{namespace}\0{query}\0{recall.text}".encode()).hexdigest()[:32]
    metadata: dict[str, Any] = {
        TIER_KEY: "parametric",
        "namespace": namespace,
        "modules": list(recall.modules),
        "confidence": recall.confidence,
        "reason": recall.reason,
    }
    node = TextNode(
        id_=f"recall-{digest}",
        text=recall.text,
        metadata=metadata,
        excluded_llm_metadata_keys=list(metadata),
        excluded_embed_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=recall.confidence)


def hit_node(hit: Hit) -> NodeWithScore:
    """A buffer search hit as a scored node (id = record id, metadata = record metadata)."""
    metadata = {**hit.metadata, TIER_KEY: "buffer"}
    hidden = [k for k, v in metadata.items() if k not in LLM_METADATA_KEYS or v in ("", None)]
    node = TextNode(
        id_=hit.id,
        text=hit.text,
        metadata=metadata,
        excluded_llm_metadata_keys=hidden,
        excluded_embed_metadata_keys=hidden,
    )
    return NodeWithScore(node=node, score=hit.score)


async def _value(value: Any) -> Any:
    return value
