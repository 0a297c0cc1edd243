"""The routing index: one Chroma collection of keys per namespace, each key naming its module.

A module's keys are the texts of the buffer records trained into it (their embeddings are copied
from the buffer, not recomputed) and the questions of its probes (the synthetic QA it was trained
and verified on). A question is routed by the modules its nearest keys belong to.

The index is derived data: the module registry on disk is the truth. :meth:`RoutingIndex.sync`
makes the index match the committed modules (adding the keys of a module that has none, deleting
the keys of modules that are gone), so a run killed between a module's commit and its indexing,
or a module committed by another process, is picked up by the next sync. Queries ignore keys of
modules that are not committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._lru import LRUDict
from ..errors import BackendError
from ..registry import modules as registry
from ..store.buffer import NS_META_KEY, ROLE_META_KEY, _is_not_found
from ..store.client import get_or_create_collection
from ..store.namespaces import encode_namespace, pack_namespace

logger = logging.getLogger(__name__)

ROLE_ROUTING = "routing"
PREFIX = "lr"  # routing collections: lr-<slug>-<hash>, next to the buffer's lm-<slug>-<hash>
_BATCH = 2048


@dataclass(frozen=True)
class KeyHit:
    """One routing key near a query."""

    module_id: str
    kind: str  # 'record' or 'question'
    text: str
    score: float
    record_id: str = ""


class RoutingIndex:
    """Keys -> modules for every namespace of a store (same Chroma as the buffer).

    Args:
        store_dir: the store directory (the registry lives under it).
        provider: the buffer's Chroma provider (embedded or server).
        buffer: the :class:`~lora_memory_plugin.store.buffer.Buffer` (records, embedder).
    """

    def __init__(self, store_dir: Path, provider: Any, buffer: Any) -> None:
        self.store_dir = store_dir
        self.provider = provider
        self.buffer = buffer
        # ns -> module ids known to be indexed; bounded: a long-lived process serves many tenants
        self._indexed: LRUDict[str, frozenset[str]] = LRUDict()
        self._lock = threading.Lock()

    # ---- collection ----------------------------------------------------------------------
    def _collection(self, namespace: str, client: Any, *, create: bool) -> Any:
        name = encode_namespace(namespace, prefix=PREFIX)
        try:
            if create:
                return get_or_create_collection(
                    client,
                    name,
                    metadata={NS_META_KEY: pack_namespace(namespace), ROLE_META_KEY: ROLE_ROUTING},
                    embedding_function=self.buffer.embedder,
                )
            return client.get_collection(name, embedding_function=self.buffer.embedder)
        except Exception as e:
            if not create and _is_not_found(e):
                return None
            raise BackendError(
                f"Chroma failed to open the routing index of {namespace!r}: {e}"
            ) from e

    # ---- writes --------------------------------------------------------------------------
    def sync(self, namespace: str, manifests: Sequence[Any] | None = None) -> dict[str, int]:
        """Index every committed module of ``namespace`` that has no keys; drop stale keys.

        Returns ``{"added_modules": n, "added_keys": n, "removed_modules": n}``.
        """
        if manifests is None:
            manifests = registry.list_modules(self.store_dir, namespace)
        live = {m.module_id: m for m in manifests}
        with self._lock:
            if self._indexed.get(namespace) == frozenset(live):
                return {"added_modules": 0, "added_keys": 0, "removed_modules": 0}
        stats = {"added_modules": 0, "added_keys": 0, "removed_modules": 0}
        with self.provider.writing() as client:
            col = self._collection(namespace, client, create=bool(live))
            if col is None:
                return stats
            try:
                got = col.get(include=["metadatas"])
            except Exception as e:
                raise BackendError(f"Chroma read of the routing index failed: {e}") from e
            present: dict[str, list[str]] = {}
            for key_id, meta in zip(got["ids"], got["metadatas"], strict=True):
                present.setdefault(str((meta or {}).get("module_id", "")), []).append(key_id)
            for mid, key_ids in present.items():
                if mid not in live:
                    self._delete(col, key_ids)
                    stats["removed_modules"] += 1
            for mid, manifest in live.items():
                if mid not in present:
                    stats["added_keys"] += self._add_module(col, namespace, manifest)
                    stats["added_modules"] += 1
        with self._lock:
            self._indexed[namespace] = frozenset(live)
        if stats["added_modules"] or stats["removed_modules"]:
            logger.info("routing index of %r: %s", namespace, stats)
        return stats

    def _add_module(self, col: Any, namespace: str, manifest: Any) -> int:
        ids: list[str] = []
        docs: list[str] = []
        metas: list[dict[str, Any]] = []
        embs: list[Any] = []
        mid = manifest.module_id
        records = self._records_with_embeddings(namespace, list(manifest.record_ids))
        for rid, text, emb in records:
            ids.append(f"{mid}:r:{rid}")
            docs.append(text)
            metas.append({"module_id": mid, "kind": "record", "record_id": rid})
            embs.append(emb)
        questions = list(dict.fromkeys(p["question"] for p in manifest.probes if p.get("question")))
        if questions:
            q_embs = self.buffer.embedder.embed(questions)
            for i, (q, emb) in enumerate(zip(questions, q_embs, strict=True)):
                ids.append(f"{mid}:q:{i}")
                docs.append(q)
                metas.append({"module_id": mid, "kind": "question", "record_id": ""})
                embs.append(emb)
        for start in range(0, len(ids), _BATCH):
            end = start + _BATCH
            try:
                col.upsert(
                    ids=ids[start:end],
                    documents=docs[start:end],
                    metadatas=metas[start:end],
                    embeddings=[list(map(float, e)) for e in embs[start:end]],
                )
            except Exception as e:
                raise BackendError(f"Chroma write to the routing index failed: {e}") from e
        return len(ids)

    def _records_with_embeddings(
        self, namespace: str, record_ids: list[str]
    ) -> list[tuple[str, str, Any]]:
        """The module's records still stored, with the buffer's own embeddings."""
        if not record_ids or not self.buffer.has_namespace(namespace):
            return []
        col = self.buffer._collection(namespace, create=False)
        out: list[tuple[str, str, Any]] = []
        for start in range(0, len(record_ids), _BATCH):
            try:
                got = col.get(
                    ids=record_ids[start : start + _BATCH], include=["documents", "embeddings"]
                )
            except Exception as e:
                raise BackendError(f"Chroma read failed in {namespace!r}: {e}") from e
            for rid, doc, emb in zip(got["ids"], got["documents"], got["embeddings"], strict=True):
                out.append((rid, doc or "", emb))
        return out

    @staticmethod
    def _delete(col: Any, key_ids: list[str]) -> None:
        for start in range(0, len(key_ids), _BATCH):
            try:
                col.delete(ids=key_ids[start : start + _BATCH])
            except Exception as e:
                raise BackendError(f"Chroma delete in the routing index failed: {e}") from e

    def delete_record_keys(self, namespace: str, record_ids: Sequence[str]) -> None:
        """Delete the keys copied from these records: a key holds its record's text, and a
        deleted record's words must not come back as a route's ``best_key``."""
        if not record_ids:
            return
        with self.provider.writing() as client:
            col = self._collection(namespace, client, create=False)
            if col is None:
                return
            for start in range(0, len(record_ids), _BATCH):
                chunk = list(record_ids[start : start + _BATCH])
                try:
                    col.delete(where={"record_id": {"$in": chunk}})
                except Exception as e:
                    raise BackendError(f"Chroma delete in the routing index failed: {e}") from e

    def drop(self, namespace: str) -> None:
        """Delete the namespace's routing collection (it is rebuilt by the next sync)."""
        with self.provider.writing() as client:
            try:
                client.delete_collection(encode_namespace(namespace, prefix=PREFIX))
            except Exception as e:
                if not _is_not_found(e):
                    raise BackendError(f"Chroma failed to drop a routing index: {e}") from e
        with self._lock:
            self._indexed.pop(namespace, None)

    # ---- reads ---------------------------------------------------------------------------
    def query(self, namespace: str, text: str, k: int) -> list[KeyHit]:
        """The ``k`` keys nearest to ``text`` (best first); [] when the namespace has none."""
        col = self._collection(namespace, self.provider.client(), create=False)
        if col is None:
            return []
        emb = self.buffer.embedder.embed([text])
        try:
            res = col.query(
                query_embeddings=emb,
                n_results=k,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as e:
            raise BackendError(f"Chroma query of the routing index failed: {e}") from e
        return [
            KeyHit(
                module_id=str((m or {}).get("module_id", "")),
                kind=str((m or {}).get("kind", "")),
                text=d or "",
                score=1.0 - float(dist),
                record_id=str((m or {}).get("record_id", "")),
            )
            for d, m, dist in zip(
                res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True
            )
        ]

    def count(self, namespace: str) -> dict[str, int]:
        """Keys per module id."""
        col = self._collection(namespace, self.provider.client(), create=False)
        if col is None:
            return {}
        got = col.get(include=["metadatas"])
        out: dict[str, int] = {}
        for meta in got["metadatas"]:
            mid = str((meta or {}).get("module_id", ""))
            out[mid] = out.get(mid, 0) + 1
        return out
