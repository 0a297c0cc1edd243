"""Forgetting: delete records from the buffer, then from the parametric memory.

A fact trained into a LoRA module stays there until the module is rebuilt without it. So
``forget`` deletes the records from the buffer (the source of truth), removes every module that
held one of them (its knowledge is gone at once: nothing answers from it any more), puts the
module's remaining records back in the buffered state, and, unless ``rebuild=False``,
consolidates the namespace again so those records return to parametric memory.

The same repair (:func:`drop_modules_missing_records`) runs at the start of every consolidation:
a module listing a record the buffer no longer holds is stale, whatever deleted the record (a
``forget`` killed half way, or a framework integration deleting buffer records). Each step is
idempotent, so a crash anywhere leaves a state the next ``forget`` or ``consolidate`` finishes:

1. delete the records (after this, the buffer no longer has them);
2. remove the stale modules (rename-then-delete: never half listed);
3. reset their remaining records to ``buffered`` (also done for any record naming a module
   that no longer exists).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._failpoints import failpoint
from ..errors import InvalidInputError, InvalidTypeError
from ..registry import modules as registry
from ..types import ForgetReport

if TYPE_CHECKING:
    from ..memory import LoRAMemory

logger = logging.getLogger(__name__)

STATUS_BUFFERED = "buffered"
STATUS_CONSOLIDATED = "consolidated"


def forget(
    mem: LoRAMemory,
    namespace: str,
    ids: Sequence[str] | None,
    where: dict[str, Any] | None,
    *,
    rebuild: bool,
    progress: bool = False,
    options: dict[str, Any] | None = None,
) -> ForgetReport:
    """See :meth:`LoRAMemory.forget`. Runs under the namespace's consolidation lock."""
    from .engine import ConsolidationOptions, consolidation_lock, run_locked

    if (ids is None) == (where is None):
        raise InvalidInputError("forget needs exactly one of ids=[...] or where={...}")
    if ids is not None and (isinstance(ids, str) or not all(isinstance(i, str) for i in ids)):
        raise InvalidTypeError("ids must be a list of str record ids")
    if where is not None and (not isinstance(where, dict) or not where):
        raise InvalidInputError("where must be a non-empty Chroma metadata filter (dict)")
    try:
        opts = ConsolidationOptions(**(options or {}))
    except TypeError as e:
        raise InvalidInputError(f"unknown consolidation option: {e}") from e
    t0 = time.perf_counter()
    with consolidation_lock(mem, namespace):
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            found = [r.id for r in mem.buffer.get_existing(namespace, wanted)]
            missing = tuple(i for i in wanted if i not in set(found))
        else:
            found = [r.id for r in mem.buffer.get(namespace, where=where)]
            missing = ()
        deleted = mem.buffer.delete(namespace, found) if found else 0
        failpoint("forget_deleted")
        removed, reset = drop_modules_missing_records(mem, namespace)
        notes = []
        if missing:
            notes.append(f"{len(missing)} id(s) were not in the namespace (already forgotten?)")
        report = None
        if rebuild and (removed or mem.count(namespace, status=STATUS_BUFFERED)):
            report = run_locked(mem, namespace, opts, progress=progress)
        elif removed:
            notes.append(
                f"{reset} record(s) of the removed module(s) are buffered again: the next "
                "consolidation retrains them"
            )
    return ForgetReport(
        namespace=namespace,
        deleted=deleted,
        missing=missing,
        modules_removed=tuple(removed),
        records_reset=reset,
        rebuild=report,
        seconds=time.perf_counter() - t0,
        notes=tuple(notes),
    )


def drop_modules_missing_records(mem: LoRAMemory, namespace: str) -> tuple[list[str], int]:
    """Remove modules that list a record the buffer no longer has; reset orphaned records.

    Returns (removed module ids, records reset to buffered). Call under the namespace lock.
    """
    modules = registry.list_modules(mem.path, namespace)
    removed: list[str] = []
    if modules and mem.buffer.has_namespace(namespace):
        listed = list(dict.fromkeys(rid for m in modules for rid in m.record_ids))
        present = {r.id for r in mem.buffer.get_existing(namespace, listed)}
        for m in modules:
            if any(rid not in present for rid in m.record_ids):
                registry.remove_module(mem.path, namespace, m.module_id)
                mem.generator_if_loaded_forget(m.module_id)
                removed.append(m.module_id)
                failpoint("forget_module_removed")
    reset = reset_orphans(mem, namespace)
    if removed:
        mem.routing.sync(namespace)
        logger.info("removed %d stale module(s) of %r: %s", len(removed), namespace, removed)
    return removed, reset


def reset_orphans(mem: LoRAMemory, namespace: str) -> int:
    """Records marked consolidated into a module that no longer exists go back to buffered."""
    if not mem.buffer.has_namespace(namespace):
        return 0
    live = {m.module_id for m in registry.list_modules(mem.path, namespace)}
    consolidated = mem.buffer.get(namespace, where={"status": STATUS_CONSOLIDATED})
    orphans = [r.id for r in consolidated if r.metadata.get("module_id") not in live]
    if orphans:
        mem.buffer.update_metadata(namespace, orphans, {"status": STATUS_BUFFERED, "module_id": ""})
    return len(orphans)
