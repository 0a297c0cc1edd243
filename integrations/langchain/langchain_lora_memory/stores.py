"""``LoRAMemoryStore``: a LangGraph long-term store whose items live in the lora-memory buffer.

Each item is one buffered user-role record, so it is searchable at once and, after
``consolidate``, trained into the namespace's LoRA modules like any other user turn.

Mapping:
    - a namespace tuple ``("memories", "user-42")`` is the memory namespace
      ``"memories/user-42"`` (labels joined by ``separator``, a separator or backslash inside a
      label escaped with a backslash), so ``("memories", "alice", "notes")`` and
      ``("memories", "alice/notes")`` never share a collection or a LoRA module; the exact tuple
      is also kept in the record's metadata;
    - the record text is the item's indexed text (the ``index_fields`` of the value, as
      LangGraph's ``InMemoryStore`` extracts them; the whole value as JSON by default), which
      is what the embedder and the consolidation see;
    - the JSON value, key, namespace and timestamps are record metadata (``lg_*`` keys).

Semantics follow LangGraph's ``InMemoryStore``: within one ``batch`` every read sees the state
before the batch's writes; several puts of one key in a batch keep the last; a query ranks by
cosine similarity and items put with ``index=False`` come after the ranked ones. Without a
query, items come oldest first. A namespace is listed while it holds items (as the Postgres
store does; ``InMemoryStore`` keeps listing a namespace after its last item is deleted).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    validate_op_namespace,
)
from langgraph.store.base.embed import get_text_at_path, tokenize_path
from langgraph.store.memory import _compare_values

from lora_memory_plugin import UnknownNamespaceError
from lora_memory_plugin.integration import MemoryBacked

if TYPE_CHECKING:
    from lora_memory_plugin import LoRAMemory, Record

STORE_FLAG = "lg_store"
KEY = "lg_key"
NS = "lg_ns"
NS_DEPTH = "lg_ns_depth"
NS_LABEL = "lg_ns_{}"
CREATED = "lg_created_at"
UPDATED = "lg_updated_at"
INDEXED = "lg_indexed"
VALUE_PARTS = "lg_value_parts"
VALUE_PART = "lg_value_{}"
_PART_CHARS = 4000  # the core accepts metadata strings up to 4096 characters
_MAX_SCORED = 1000  # LoRAMemory.search's largest k


class LoRAMemoryStore(MemoryBacked, BaseStore):
    """LangGraph ``BaseStore`` over a lora-memory store: long-term memory that consolidates.

    Setup:
        .. code-block:: bash

            pip install -e integrations/langchain   # langchain-lora-memory

    Instantiate:
        .. code-block:: python

            from langchain_lora_memory import LoRAMemoryStore

            store = LoRAMemoryStore(path="./memory", index_fields=["content"])

    Put, get, search:
        .. code-block:: python

            store.put(("memories", "user-42"), "locker", {"content": "Locker code is 4471."})
            store.get(("memories", "user-42"), "locker").value
            store.search(("memories",), query="locker code", limit=3)

    With an agent (and LangMem's memory tools, which call the same API):
        .. code-block:: python

            from langchain.agents import create_agent

            agent = create_agent(model, tools=[...], store=store)

    Async:
        .. code-block:: python

            await store.aput(("memories", "user-42"), "k1", {"content": "..."})
            await store.asearch(("memories", "user-42"), query="...")

    Args:
        memory: an open ``LoRAMemory`` (or give ``path``).
        path: a store directory, opened (created) with ``LoRAMemory.open``.
        index_fields: JSON paths of the value that make the record text (LangGraph's
            ``IndexConfig["fields"]`` syntax); ``("$",)`` is the whole value as JSON.
        separator: joins namespace labels into the memory namespace name.
    """

    supports_ttl: bool = False

    def __init__(
        self,
        *,
        memory: LoRAMemory | None = None,
        path: str | Path | None = None,
        index_fields: Sequence[str] = ("$",),
        separator: str = "/",
    ) -> None:
        if isinstance(index_fields, str) or not index_fields:
            raise ValueError(
                f"index_fields must be a non-empty list of JSON paths, got {index_fields!r}"
            )
        if not separator or "\\" in separator:
            raise ValueError("separator must be a non-empty string without '\\', e.g. '/'")
        super().__init__(memory=memory, path=path)
        self.index_fields = tuple(index_fields)
        self.separator = separator
        self._lock = threading.Lock()  # one writer per store object; the core locks processes
        self._last_time = 0.0

    def __repr__(self) -> str:
        return f"LoRAMemoryStore(memory={self.memory!r}, index_fields={list(self.index_fields)})"

    def memory_namespace(self, namespace: tuple[str, ...]) -> str:
        """The lora-memory namespace that holds the items of ``namespace``: its labels joined by
        the separator, each escaped, so distinct tuples never map to one namespace (whose
        collection and modules they would share)."""
        sep = self.separator
        return sep.join(label.replace("\\", "\\\\").replace(sep, "\\" + sep) for label in namespace)

    # ---- BaseStore ---------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order: reads see the state before this batch's puts."""
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        results: list[Result] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        with self._lock:
            for op in ops:
                if isinstance(op, GetOp):
                    results.append(self._get(op))
                elif isinstance(op, SearchOp):
                    results.append(self._search(op))
                elif isinstance(op, ListNamespacesOp):
                    results.append(self._list_namespaces(op))
                elif isinstance(op, PutOp):
                    puts.pop((op.namespace, op.key), None)  # the last put of a key wins
                    puts[(op.namespace, op.key)] = op
                    results.append(None)
                else:
                    raise ValueError(f"unknown store operation {type(op).__name__}")
            for op in puts.values():
                self._put(op)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async twin of :meth:`batch` (runs it in a worker thread)."""
        return await asyncio.to_thread(self.batch, list(ops))

    # ---- reads -------------------------------------------------------------------------
    def _records(self, mns: str, where: dict[str, Any]) -> list[Record]:
        try:
            records: list[Record] = self.memory.get(mns, where=where)
        except UnknownNamespaceError:
            return []
        return records

    def _item_records(self, namespace: tuple[str, ...], key: str) -> list[Record]:
        where = _and({STORE_FLAG: True}, {NS: _pack(namespace)}, {KEY: key})
        return self._records(self.memory_namespace(namespace), where)

    def _get(self, op: GetOp) -> Item | None:
        records = self._item_records(op.namespace, op.key)
        if not records:
            return None
        newest = max(records, key=lambda r: float(r.metadata.get(UPDATED, 0.0)))
        return _item(newest)

    def _candidate_namespaces(self, prefix: tuple[str, ...]) -> list[str]:
        if not prefix:
            return self.memory.namespaces()
        head = self.memory_namespace(prefix)
        return [
            m for m in self.memory.namespaces() if m == head or m.startswith(head + self.separator)
        ]

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = op.namespace_prefix
        where = _and(
            {STORE_FLAG: True}, *({NS_LABEL.format(i): label} for i, label in enumerate(prefix))
        )
        scored: list[tuple[float, Record]] = []
        unscored: list[Record] = []
        for mns in self._candidate_namespaces(prefix):
            records = [r for r in self._records(mns, where) if _matches(r, op.filter)]
            if not records:
                continue
            if not op.query:
                unscored.extend(records)
                continue
            wanted = {r.id for r in records if r.metadata.get(INDEXED)}
            scores: dict[str, float] = {}
            if wanted:
                k = min(len(wanted), _MAX_SCORED)
                for hit in self.memory.search(mns, op.query, k, where=where):
                    if hit.id in wanted:
                        scores[hit.id] = hit.score
            for r in records:
                if r.id in scores:
                    scored.append((scores[r.id], r))
                else:
                    unscored.append(r)
        unscored.sort(key=_age)
        if not op.query:
            page = unscored[op.offset : op.offset + op.limit]
            return [_search_item(r, None) for r in page]
        scored.sort(key=lambda sr: (-sr[0], _age(sr[1])))
        kept = [_search_item(r, s) for s, r in scored[op.offset : op.offset + op.limit]]
        if len(kept) < op.limit:  # as InMemoryStore: unindexed items fill the page, unranked
            kept.extend(_search_item(r, None) for r in unscored[: op.limit - len(kept)])
        return kept

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for mns in self.memory.namespaces():
            for r in self._records(mns, {STORE_FLAG: True}):
                found.add(_unpack(r.metadata[NS]))
        namespaces = [
            ns for ns in found if all(_does_match(c, ns) for c in op.match_conditions or ())
        ]
        if op.max_depth is not None:
            namespaces = list({ns[: op.max_depth] for ns in namespaces})
        return sorted(namespaces)[op.offset : op.offset + op.limit]

    # ---- writes ------------------------------------------------------------------------
    def _now(self) -> float:
        # Strictly increasing, so items put in one batch keep their order (oldest first).
        now = max(time.time(), self._last_time + 1e-6)
        self._last_time = now
        return now

    def _put(self, op: PutOp) -> None:
        mns = self.memory_namespace(op.namespace)
        old = self._item_records(op.namespace, op.key)
        if op.value is None:
            if old:
                self.memory.delete(mns, [r.id for r in old])
            return
        value = dict(op.value)
        text, indexed = self._text(value, op.index)
        now = self._now()
        created = min((float(r.metadata.get(CREATED, now)) for r in old), default=now)
        meta = self._metadata(op, value, indexed, created, now)
        same = next((r for r in old if r.text == text), None)
        if same is not None:  # same text: the core would dedupe the write, so patch in place
            self.memory.update_metadata(mns, [same.id], meta)
            keep = same.id
        else:
            keep = self._add(mns, op, text, meta)
            if any(r.id == keep for r in old):  # an earlier version with this text: refresh it
                self.memory.update_metadata(mns, [keep], meta)
        stale = [r.id for r in old if r.id != keep]
        if stale:  # after the write: a crash in between leaves two versions, never none
            self.memory.delete(mns, stale)

    def _add(self, mns: str, op: PutOp, text: str, meta: dict[str, Any]) -> str:
        rid = self.memory.add_turn(mns, text, role="user", metadata=meta, created_at=meta[UPDATED])
        if self._owns(mns, rid, op):
            return rid
        # The buffer already held this exact text for another key or as a turn (records are
        # deduplicated by content), so this item's record names its key to stay distinct.
        text = f"{text}\n(key: {op.key})"
        rid = self.memory.add_turn(mns, text, role="user", metadata=meta, created_at=meta[UPDATED])
        if not self._owns(mns, rid, op):
            raise ValueError(
                f"cannot store key {op.key!r} in {op.namespace}: its text collides with another "
                "record of the namespace; change the value or the key"
            )
        return rid

    def _owns(self, mns: str, rid: str, op: PutOp) -> bool:
        meta = self.memory.get(mns, [rid])[0].metadata
        return bool(meta.get(KEY) == op.key and meta.get(NS) == _pack(op.namespace))

    def _text(self, value: dict[str, Any], index: Any) -> tuple[str, bool]:
        """The record text: the indexed fields' text, or the value as JSON when none."""
        if index is not False:
            paths = self.index_fields if index is None else tuple(index)
            texts: list[str] = []
            for p in paths:
                texts.extend(get_text_at_path(value, p if p == "$" else tokenize_path(p)))
            text = "\n".join(t for t in texts if t.strip())
            if text.strip():
                return text, True
        return json.dumps(value, sort_keys=True, ensure_ascii=False), False

    def _metadata(
        self, op: PutOp, value: dict[str, Any], indexed: bool, created: float, updated: float
    ) -> dict[str, Any]:
        blob = json.dumps(value, ensure_ascii=False)
        parts = [blob[i : i + _PART_CHARS] for i in range(0, len(blob), _PART_CHARS)] or [""]
        meta: dict[str, Any] = {
            STORE_FLAG: True,
            KEY: op.key,
            NS: _pack(op.namespace),
            NS_DEPTH: len(op.namespace),
            CREATED: created,
            UPDATED: updated,
            INDEXED: indexed,
            VALUE_PARTS: len(parts),
        }
        meta.update({NS_LABEL.format(i): label for i, label in enumerate(op.namespace)})
        meta.update({VALUE_PART.format(i): part for i, part in enumerate(parts)})
        return meta


# ---- helpers ---------------------------------------------------------------------------
def _pack(namespace: tuple[str, ...]) -> str:
    return json.dumps(list(namespace), ensure_ascii=False)


def _unpack(packed: str) -> tuple[str, ...]:
    return tuple(json.loads(packed))


def _and(*clauses: dict[str, Any]) -> dict[str, Any]:
    return clauses[0] if len(clauses) == 1 else {"$and": list(clauses)}


def _age(record: Record) -> float:
    return float(record.metadata.get(CREATED, 0.0))


def _value(record: Record) -> dict[str, Any]:
    meta = record.metadata
    blob = "".join(str(meta[VALUE_PART.format(i)]) for i in range(int(meta[VALUE_PARTS])))
    value: dict[str, Any] = json.loads(blob)
    return value


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _item(record: Record) -> Item:
    m = record.metadata
    return Item(
        value=_value(record),
        key=str(m[KEY]),
        namespace=_unpack(m[NS]),
        created_at=_when(float(m[CREATED])),
        updated_at=_when(float(m[UPDATED])),
    )


def _search_item(record: Record, score: float | None) -> SearchItem:
    it = _item(record)
    return SearchItem(
        namespace=it.namespace,
        key=it.key,
        value=it.value,
        created_at=it.created_at,
        updated_at=it.updated_at,
        score=score,
    )


def _matches(record: Record, flt: dict[str, Any] | None) -> bool:
    """``SearchOp.filter`` on the item value, with LangGraph's own comparison rules."""
    if not flt:
        return True
    value = _value(record)
    return all(_compare_values(value.get(k), v) for k, v in flt.items())


def _does_match(cond: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = cond.path
    if len(namespace) < len(path):
        return False
    if cond.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif cond.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValueError(f"match_type must be 'prefix' or 'suffix', got {cond.match_type!r}")
    return all(p in ("*", n) for n, p in pairs)
