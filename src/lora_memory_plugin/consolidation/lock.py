"""The namespace's consolidation lock: one consolidation or forget at a time, across processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._filelock import file_lock
from ..store.namespaces import encode_namespace

if TYPE_CHECKING:
    from ..ports import Services


def consolidation_lock(svc: Services, namespace: str) -> Any:
    """The namespace's consolidation lock (non-blocking: LockHeldError when another process
    consolidates or forgets in it)."""
    lock = svc.path / "locks" / f"consolidate-{encode_namespace(namespace)}.lock"
    return file_lock(lock, blocking=False, what=f"consolidation of {namespace!r}")


__all__ = ["consolidation_lock"]
