"""A dict that keeps only its most recently used entries: per-namespace caches stay bounded in a
process that serves many tenants."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

NAMESPACE_CACHE_SIZE = 1024
"""Entries a per-namespace cache keeps (collection handles, routing-index state): an evicted
namespace is looked up again on its next use, nothing else changes."""


class LRUDict(Generic[K, V]):
    """``get`` / ``[]=`` / ``pop`` / ``clear`` of a dict, holding at most ``maxsize`` entries; a
    ``get`` hit or a set makes the entry the most recent, and the least recent is dropped.
    Thread-safe: each operation holds a lock (a plain dict's were atomic under the GIL; a
    check-then-move here would not be)."""

    def __init__(self, maxsize: int = NAMESPACE_CACHE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def pop(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            return self._data.pop(key, default)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
