"""The buffer: one Chroma collection per namespace holding turns and document chunks.

Embeddings are computed here (batched, with our MiniLM function) and handed to Chroma, so
Chroma's own default embedder is never invoked. The Chroma client comes from a provider
(:mod:`.client`) that keeps an embedded store coherent when several processes share it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .._lru import LRUDict
from ..errors import BackendError, RecordNotFoundError, UnknownNamespaceError
from ..types import Hit, Record
from .client import get_or_create_collection
from .embedder import MiniLMEmbeddingFunction
from .namespaces import encode_namespace, pack_namespace, unpack_namespace
from .records import NewRecord

logger = logging.getLogger(__name__)

NS_META_KEY = "lm_namespace"
ROLE_META_KEY = "lm_role"
ROLE_BUFFER = "buffer"
_MAX_BATCH = 4096  # below Chroma's max batch size


class Buffer:
    """Namespace-aware record store over a Chroma client.

    Args:
        provider: an ``EmbeddedChroma`` or ``ServerChroma`` from :func:`.client.make_provider`.
        embedder: the embedding function (also attached to each collection).
    """

    def __init__(self, provider: Any, embedder: MiniLMEmbeddingFunction) -> None:
        self.provider = provider
        self.embedder = embedder
        self._collections: LRUDict[str, Any] = LRUDict()  # bounded: many tenants
        self._generation = -1

    # ---- collections -------------------------------------------------------------------
    def _collection(self, namespace: str, *, create: bool, client: Any = None) -> Any:
        client = client if client is not None else self.provider.client()
        if self._generation != self.provider.generation:  # the client was reopened
            self._collections.clear()
            self._generation = self.provider.generation
        col = self._collections.get(namespace)
        if col is not None:
            return col
        name = encode_namespace(namespace)
        try:
            if create:
                col = get_or_create_collection(
                    client,
                    name,
                    metadata={NS_META_KEY: pack_namespace(namespace), ROLE_META_KEY: ROLE_BUFFER},
                    embedding_function=self.embedder,
                )
            else:
                col = client.get_collection(name, embedding_function=self.embedder)
        except Exception as e:
            if not create and _is_not_found(e):
                raise UnknownNamespaceError(
                    f"namespace {namespace!r} has no records in this store; write to it first "
                    "(add_turn / add_document) or check the name (`lora-memory status`)"
                ) from e
            raise BackendError(f"Chroma failed to open namespace {namespace!r}: {e}") from e
        self._collections[namespace] = col
        return col

    def has_namespace(self, namespace: str) -> bool:
        try:
            self._collection(namespace, create=False)
        except UnknownNamespaceError:
            return False
        return True

    def namespaces(self) -> list[str]:
        try:
            cols = self.provider.client().list_collections()
        except Exception as e:
            raise BackendError(f"Chroma failed to list collections: {e}") from e
        out = []
        for col in cols:
            meta = col.metadata or {}
            if meta.get(ROLE_META_KEY) == ROLE_BUFFER and NS_META_KEY in meta:
                out.append(unpack_namespace(meta[NS_META_KEY]))
        return sorted(out)

    # ---- writes ------------------------------------------------------------------------
    def add(self, namespace: str, records: Sequence[NewRecord]) -> list[str]:
        """Store records (deduplicated by content hash); returns one id per input record."""
        ids = [r.id for r in records]
        if not records:
            return ids
        # Embed outside the lock: it is the slow part and needs no coordination.
        unique: dict[str, NewRecord] = {}
        for r in records:
            unique.setdefault(r.id, r)
        new = list(unique.values())
        embeddings = self.embedder.embed([r.text for r in new])
        with self.provider.writing() as client:
            col = self._collection(namespace, create=True, client=client)
            try:
                existing = set(col.get(ids=[r.id for r in new], include=[])["ids"])
            except Exception as e:
                raise BackendError(f"Chroma read failed in {namespace!r}: {e}") from e
            keep = [i for i, r in enumerate(new) if r.id not in existing]
            for start in range(0, len(keep), _MAX_BATCH):
                part = keep[start : start + _MAX_BATCH]
                try:
                    col.add(
                        ids=[new[i].id for i in part],
                        documents=[new[i].text for i in part],
                        metadatas=[new[i].metadata() for i in part],
                        embeddings=embeddings[part],
                    )
                except Exception as e:
                    raise BackendError(
                        f"Chroma write failed in {namespace!r} after {start} of {len(keep)} new "
                        f"records (records are idempotent: retrying the call is safe): {e}"
                    ) from e
        if len(keep) < len(new):
            logger.debug("%d duplicate record(s) skipped in %r", len(new) - len(keep), namespace)
        return ids

    def update_metadata(self, namespace: str, ids: Sequence[str], patch: dict[str, Any]) -> None:
        """Set ``patch`` keys on the given records (e.g. status after consolidation)."""
        if not ids:
            return
        with self.provider.writing() as client:
            col = self._collection(namespace, create=False, client=client)
            try:
                got = col.get(ids=list(ids), include=["metadatas"])
                metas = [{**(m or {}), **patch} for m in got["metadatas"]]
                col.update(ids=got["ids"], metadatas=metas)
            except Exception as e:
                raise BackendError(f"Chroma update failed in {namespace!r}: {e}") from e

    def delete(self, namespace: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self.provider.writing() as client:
            col = self._collection(namespace, create=False, client=client)
            try:
                found = col.get(ids=list(ids), include=[])["ids"]
                if found:
                    col.delete(ids=found)
            except Exception as e:
                raise BackendError(f"Chroma delete failed in {namespace!r}: {e}") from e
        return len(found)

    # ---- reads -------------------------------------------------------------------------
    def search(
        self, namespace: str, query: str, k: int, where: dict[str, Any] | None = None
    ) -> list[Hit]:
        col = self._collection(namespace, create=False)
        emb = self.embedder.embed([query])
        try:
            res = col.query(
                query_embeddings=emb,
                n_results=k,
                where=where or None,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as e:
            raise BackendError(f"Chroma query failed in {namespace!r}: {e}") from e
        return [
            Hit(id=i, text=d or "", score=1.0 - float(dist), metadata=dict(m or {}))
            for i, d, m, dist in zip(
                res["ids"][0],
                res["documents"][0],
                res["metadatas"][0],
                res["distances"][0],
                strict=True,
            )
        ]

    def get(
        self,
        namespace: str,
        ids: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Record]:
        col = self._collection(namespace, create=False)
        if ids is not None and not ids:
            return []  # Chroma rejects an empty id list; none asked, none returned
        try:
            res = col.get(
                ids=list(ids) if ids is not None else None,
                where=where or None,
                limit=limit,
                offset=offset,
                include=["documents", "metadatas"],
            )
        except Exception as e:
            raise BackendError(f"Chroma get failed in {namespace!r}: {e}") from e
        records = [
            Record(id=i, text=d or "", metadata=dict(m or {}))
            for i, d, m in zip(res["ids"], res["documents"], res["metadatas"], strict=False)
        ]
        if ids is not None:
            by_id = {r.id: r for r in records}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise RecordNotFoundError(
                    f"{len(missing)} record id(s) not in namespace {namespace!r}: {missing[:5]}"
                )
            records = [by_id[i] for i in ids]
        return records

    def get_existing(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The records among ``ids`` that the namespace still holds (no error for the rest)."""
        col = self._collection(namespace, create=False)
        out: list[Record] = []
        for start in range(0, len(ids), _MAX_BATCH):
            try:
                res = col.get(
                    ids=list(ids[start : start + _MAX_BATCH]), include=["documents", "metadatas"]
                )
            except Exception as e:
                raise BackendError(f"Chroma get failed in {namespace!r}: {e}") from e
            out.extend(
                Record(id=i, text=d or "", metadata=dict(m or {}))
                for i, d, m in zip(res["ids"], res["documents"], res["metadatas"], strict=False)
            )
        return out

    def count(self, namespace: str, where: dict[str, Any] | None = None) -> int:
        col = self._collection(namespace, create=False)
        try:
            if not where:
                return int(col.count())
            return len(col.get(where=where, include=[])["ids"])
        except Exception as e:
            raise BackendError(f"Chroma count failed in {namespace!r}: {e}") from e


def _is_not_found(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return "notfound" in text or "does not exist" in text or "not found" in text
