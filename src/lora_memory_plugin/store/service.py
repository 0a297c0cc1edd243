"""``Records``: the buffer's writes and reads as callers send them, checked before anything runs.

Every value a caller passes is validated here (text limits, labels, metadata, times, k, ids,
pagination), so a bad input raises a typed error and stores nothing. The namespace arrives
already validated: the facade owns the tenant boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._validate import MAX_QUERY_CHARS, check_ids, check_k, check_time
from ..config import BufferConfig
from ..errors import InvalidInputError, InvalidTypeError, LoraMemoryError
from ..types import Hit, Record
from .buffer import Buffer
from .chunking import chunk_text
from .filters import build_where
from .records import ROLES, NewRecord, check_extra, check_label, check_text

TURN_KEYS = frozenset({"content", "role", "session_id", "metadata", "created_at"})


class Records:
    """Checked writes and reads of one store's buffer.

    Args:
        buffer: the store's :class:`.buffer.Buffer`.
        settings: returns the store's current ``[buffer]`` settings (they can change while a
            store is open, through ``update_config``).
        on_delete: called with a namespace and the ids just deleted from it (the routing index
            drops the keys copied from their text; routing sits above the buffer).
    """

    def __init__(
        self,
        buffer: Buffer,
        settings: Callable[[], BufferConfig],
        on_delete: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self._settings = settings
        self._on_delete = on_delete

    # ---- writes ------------------------------------------------------------------------
    def add_turn(
        self,
        namespace: str,
        content: object,
        *,
        role: object = "user",
        session_id: object = None,
        metadata: object = None,
        created_at: object = None,
    ) -> str:
        rec = self.turn_record(content, role, session_id, metadata, created_at)
        return self.buffer.add(namespace, [rec])[0]

    def add_turns(
        self,
        namespace: str,
        turns: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        if isinstance(turns, (str, bytes, Mapping)) or not isinstance(turns, Iterable):
            raise InvalidTypeError("turns must be an iterable of mappings, e.g. [{'content': ...}]")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        records = []
        for i, t in enumerate(turns):
            if not isinstance(t, Mapping):
                raise InvalidTypeError(f"turns[{i}] must be a mapping, got {type(t).__name__}")
            unknown = set(t) - TURN_KEYS
            if unknown:
                raise InvalidInputError(f"turns[{i}] has unknown keys {sorted(unknown)}")
            if "content" not in t:
                raise InvalidInputError(f"turns[{i}] has no 'content'")
            try:
                records.append(
                    self.turn_record(
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
            ids.extend(self.buffer.add(namespace, batch))
            if progress is not None:
                progress(len(batch))
        return ids

    def add_document(
        self,
        namespace: str,
        text: object,
        *,
        source: object = None,
        session_id: object = None,
        metadata: object = None,
        created_at: object = None,
    ) -> list[str]:
        bc = self._settings()
        text = check_text(
            text,
            what="document text",
            limit=bc.max_document_chars,
            hint="Split it into several documents.",
        )
        src = check_label(source, what="source")
        sid = check_label(session_id, what="session_id")
        extra = _extra(metadata)
        ts = check_time(created_at)
        tokenizer = self.buffer.embedder.tokenizer()
        chunks = chunk_text(text, tokenizer, bc.chunk_tokens, bc.chunk_overlap)
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
        return self.buffer.add(namespace, records)

    def update_metadata(self, namespace: str, ids: object, metadata: object) -> None:
        id_list = check_ids(ids)
        patch = check_extra(metadata)
        self.get(namespace, id_list)  # raises RecordNotFoundError naming the missing ids
        if patch:
            self.buffer.update_metadata(namespace, id_list, patch)

    def delete(self, namespace: str, ids: object) -> int:
        """Delete records; returns how many existed."""
        unique = list(dict.fromkeys(check_ids(ids)))
        if not self.buffer.has_namespace(namespace):
            return 0
        deleted = int(self.buffer.delete(namespace, unique))
        if self._on_delete is not None:
            self._on_delete(namespace, unique)
        return deleted

    # ---- reads -------------------------------------------------------------------------
    def search(self, namespace: str, query: object, k: object = 5, **filters: Any) -> list[Hit]:
        query = check_text(query, what="query", limit=MAX_QUERY_CHARS)
        return self.buffer.search(namespace, query, check_k(k), build_where(**filters))

    def get(
        self,
        namespace: str,
        ids: object = None,
        *,
        limit: object = None,
        offset: object = None,
        **filters: Any,
    ) -> list[Record]:
        id_list = None if ids is None else check_ids(ids)
        lim = _optional_int(limit, "limit", minimum=1)
        off = _optional_int(offset, "offset", minimum=0)
        w = build_where(**filters)
        return self.buffer.get(namespace, ids=id_list, where=w, limit=lim, offset=off)

    def count(self, namespace: str, **filters: Any) -> int:
        return self.buffer.count(namespace, build_where(**filters))

    # ---- checks ------------------------------------------------------------------------
    def turn_record(
        self,
        content: object,
        role: object,
        session_id: object,
        metadata: object,
        created_at: object,
    ) -> NewRecord:
        """One turn as a checked :class:`.records.NewRecord` (nothing written)."""
        text = check_text(
            content,
            what="turn content",
            limit=self._settings().max_turn_chars,
            hint="Store long texts with add_document(), which chunks them.",
        )
        r = check_label(role, what="role", allowed=ROLES)
        sid = check_label(session_id, what="session_id")
        return NewRecord(
            text,
            "turn",
            role=r,
            session_id=sid,
            created_at=check_time(created_at),
            extra=_extra(metadata),
        )


def _extra(metadata: object) -> dict[str, Any]:
    return check_extra(dict(metadata) if isinstance(metadata, Mapping) else metadata)


def _optional_int(value: object, what: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


__all__ = ["Records"]
