"""Forgetting: delete records from the buffer, then from the parametric memory.

A fact trained into a LoRA module stays there until the module is rebuilt without it. So
``forget`` deletes the records from the buffer (the source of truth), removes every module that
held one of them (its knowledge is gone at once: nothing answers from it any more), puts the
module's remaining records back in the buffered state, and, unless ``rebuild=False``,
consolidates the namespace again so those records return to parametric memory.

A repair (:func:`drop_modules_missing_records`) runs at the start of every consolidation: a
module listing a record the buffer no longer holds is stale, whatever deleted the record (a
``forget`` killed half way, ``LoRAMemory.delete``). But a missing record is not proof of a
deletion: a lost Chroma volume, a restored older ``DIR/chroma`` or a wrong ``chroma_database``
also make records "missing", and then the modules are the only copy left of those facts. So the
repair never deletes a module: it quarantines it (out of routing, kept on disk, listed by
``status``), and when much of a namespace is missing (:data:`MASS_LOSS_SHARE`,
:data:`MASS_LOSS_MIN_RECORDS`) it changes nothing and raises :class:`MissingRecordsError`.
Only ``forget`` deletes modules, and only those holding the records it was asked to forget.
Each step is idempotent, so a crash anywhere leaves a state the next ``forget`` or
``consolidate`` finishes:

1. write the forget's intent (the ids, ``DIR/locks/forget-<ns>.json``), so the repair can tell
   records a killed forget deleted from records a broken buffer lost;
2. delete the records (after this, the buffer no longer has them);
3. remove the modules holding them (rename-then-delete: never half listed);
4. reset their remaining records to ``buffered`` (also done for any record naming a module
   that no longer exists), then clear the intent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._failpoints import failpoint
from .._fsutil import fsync_dir
from ..config import CONFIG_NAME
from ..errors import InvalidInputError, InvalidTypeError, MissingRecordsError
from ..registry import modules as registry
from ..store.client import url_for_messages
from ..store.namespaces import encode_namespace
from ..types import ConsolidationReport, ForgetReport
from .lock import consolidation_lock

if TYPE_CHECKING:
    from ..ports import Services

logger = logging.getLogger(__name__)

STATUS_BUFFERED = "buffered"
STATUS_CONSOLIDATED = "consolidated"

# The repair refuses (MissingRecordsError, nothing changed) when the records missing on their
# own are more than this share of the records the namespace's modules hold...
MASS_LOSS_SHARE = 0.5
# ...and at least this many: a small namespace losing a record or two is an ordinary deletion,
# and quarantining keeps the modules anyway.
MASS_LOSS_MIN_RECORDS = 3


def forget(
    svc: Services,
    namespace: str,
    ids: Sequence[str] | None,
    where: dict[str, Any] | None,
    *,
    rebuild: Callable[[], ConsolidationReport] | None,
    missing: bool = False,
) -> ForgetReport:
    """See :meth:`LoRAMemory.forget`. Runs under the namespace's consolidation lock, and so
    does ``rebuild`` (a consolidation run of the namespace; None: no rebuild) when it runs."""
    if (ids is not None) + (where is not None) + bool(missing) != 1:
        raise InvalidInputError(
            "forget needs exactly one of ids=[...], where={...} or missing=True"
        )
    if ids is not None and (isinstance(ids, str) or not all(isinstance(i, str) for i in ids)):
        raise InvalidTypeError("ids must be a list of str record ids")
    if where is not None and (not isinstance(where, dict) or not where):
        raise InvalidInputError("where must be a non-empty Chroma metadata filter (dict)")
    t0 = time.perf_counter()
    notes: list[str] = []
    with consolidation_lock(svc, namespace):
        if missing:
            forgotten = missing_record_ids(svc, namespace)
            found: list[str] = []
            absent: tuple[str, ...] = ()
            notes.append(
                f"forgot {len(forgotten)} record(s) the modules held but the buffer had lost"
            )
        elif ids is not None:
            forgotten = list(dict.fromkeys(ids))
            found = [r.id for r in svc.buffer.get_existing(namespace, forgotten)]
            absent = tuple(i for i in forgotten if i not in set(found))
        else:
            found = [r.id for r in svc.buffer.get(namespace, where=where)]
            forgotten, absent = found, ()
        if forgotten:
            _record_intent(svc, namespace, forgotten)
        # the modules holding them go first, then the records: a kill in between leaves the
        # records visible (and the intent, which the next run finishes), never a hidden copy
        repair = repair_missing_records(svc, namespace, forgotten=forgotten)
        deleted = repair.deleted
        if absent:
            notes.append(f"{len(absent)} id(s) were not in the namespace (already forgotten?)")
        notes.extend(repair.notes())
        report = None
        changed = repair.removed or repair.quarantined
        ok = repair.refused is None  # else a rebuild would refuse too: its note says what to do
        if ok and rebuild is not None and (changed or _buffered(svc, namespace)):
            report = rebuild()
        elif ok and changed:
            notes.append(
                f"{repair.reset} record(s) of the removed module(s) are buffered again: the next "
                "consolidation retrains them"
            )
    return ForgetReport(
        namespace=namespace,
        deleted=deleted,
        missing=absent,
        modules_removed=(*repair.removed, *repair.purged),
        records_reset=repair.reset,
        rebuild=report,
        seconds=time.perf_counter() - t0,
        notes=tuple(notes),
    )


def _buffered(svc: Services, namespace: str) -> int:
    return svc.buffer.count(namespace, {"status": STATUS_BUFFERED})


@dataclass
class Repair:
    """What :func:`repair_missing_records` did to a namespace's modules."""

    removed: list[str] = field(default_factory=list)  # deleted: held a record being forgotten
    purged: list[str] = field(default_factory=list)  # quarantined ones that held one: deleted
    deleted: int = 0  # forgotten records deleted from the buffer (after their modules)
    quarantined: list[str] = field(default_factory=list)  # kept aside: records went missing
    reset: int = 0  # records of modules no longer listed, buffered again
    refused: MissingRecordsError | None = None  # too much missing: the other modules untouched

    def notes(self) -> list[str]:
        """Report notes for a forget (consolidation writes its own)."""
        out = []
        if self.purged:
            out.append(
                f"deleted {len(self.purged)} quarantined module(s) that held a forgotten record: "
                f"{', '.join(self.purged)}"
            )
        if self.quarantined:
            out.append(
                f"quarantined {len(self.quarantined)} module(s) listing records that went "
                f"missing from the buffer on their own (not forgotten here): "
                f"{', '.join(self.quarantined)}; kept on disk, listed by status"
            )
        if self.refused is not None:
            out.append(f"other modules left as they are, nothing rebuilt: {self.refused}")
        return out


def drop_modules_missing_records(svc: Services, namespace: str) -> tuple[list[str], int]:
    """Quarantine modules that list a record the buffer no longer has; reset orphaned records.

    The repair at the start of every consolidation, where nobody said the records were deleted
    on purpose: such a module is quarantined, never deleted, so a buffer that comes back finds
    it. Only a forget killed half way is finished, by deleting the modules of its records.
    Returns (module ids deleted or quarantined, records reset to buffered). Call under the
    namespace lock.

    Raises:
        MissingRecordsError: so many records are missing that the buffer itself is suspect
            (see :data:`MASS_LOSS_SHARE`); nothing else was changed.
    """
    repair = repair_missing_records(svc, namespace)
    if repair.refused is not None:
        raise repair.refused
    return [*repair.removed, *repair.quarantined], repair.reset


def repair_missing_records(
    svc: Services, namespace: str, *, forgotten: Collection[str] = ()
) -> Repair:
    """Forget ``forgotten`` records and finish a killed forget's: delete the modules -- and
    the quarantined ones -- holding them, then the records themselves; quarantine modules
    listing a record that went missing on its own, unless that is a mass loss (then they stay,
    ``refused`` says why); reset orphaned records. Call under the namespace lock."""
    modules = registry.list_modules(svc.path, namespace)
    repair = Repair()
    pending = pending_forget(svc, namespace)
    doomed = set(forgotten) | pending
    repair.purged = registry.remove_quarantined_holding(svc.path, namespace, doomed)
    settled = not modules  # a killed forget's intent is done with once its modules are seen to
    if modules and svc.buffer.has_namespace(namespace):
        settled = True
        missing = set(_missing(svc, namespace, modules))
        for m in modules:
            if doomed.intersection(m.record_ids):
                registry.remove_module(svc.path, namespace, m.module_id)
                svc.generator_if_loaded_forget(m.module_id)
                repair.removed.append(m.module_id)
                failpoint("forget_module_removed")
        kept = [m for m in modules if m.module_id not in repair.removed]
        listed = {rid for m in kept for rid in m.record_ids}
        lost = (missing & listed) - doomed
        repair.refused = _mass_loss(svc, namespace, lost, len(listed), len(kept))
        for m in kept if repair.refused is None else ():
            if lost.intersection(m.record_ids):
                _quarantine(svc, namespace, m, len(lost.intersection(m.record_ids)))
                repair.quarantined.append(m.module_id)
    if doomed and svc.buffer.has_namespace(namespace):  # no module holds them any more
        ids = sorted(doomed)
        repair.deleted = svc.buffer.delete(namespace, ids)  # deletes those present, counts them
        svc.routing.delete_record_keys(namespace, ids)  # keys hold their text
        failpoint("forget_deleted")
    if repair.refused is None or repair.removed:  # refused, nothing forgotten: change nothing
        repair.reset = reset_orphans(svc, namespace)
    if repair.removed or repair.quarantined:
        svc.routing.sync(namespace)
        logger.info(
            "%r: removed %d module(s) holding forgotten records %s, quarantined %d listing "
            "missing records %s",
            namespace,
            len(repair.removed),
            repair.removed,
            len(repair.quarantined),
            repair.quarantined,
        )
    if pending and settled:
        _intent_path(svc, namespace).unlink(missing_ok=True)
    return repair


def _intent_path(svc: Services, namespace: str) -> Path:
    return svc.path / "locks" / f"forget-{encode_namespace(namespace)}.json"


def pending_forget(svc: Services, namespace: str) -> set[str]:
    """The ids of a forget that was killed before its modules were gone (empty: none).

    An unreadable intent is ignored with a warning: the repair then quarantines the modules
    instead of deleting them, which loses nothing.
    """
    path = _intent_path(svc, namespace)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as e:
        logger.warning("forget intent %s unreadable, ignored: %s", path, e)
        return set()
    ids = data.get("ids") if isinstance(data, dict) else None
    return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()


def _record_intent(svc: Services, namespace: str, ids: Collection[str]) -> None:
    """Durably note the ids a forget is about to delete (merged with a killed forget's), so
    that whoever finishes it deletes their modules rather than quarantining them."""
    path = _intent_path(svc, namespace)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a killed write of this pid: never followed if a symlink
    data = json.dumps(
        {"namespace": namespace, "ids": sorted(pending_forget(svc, namespace) | set(ids))}
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def missing_record_ids(svc: Services, namespace: str) -> list[str]:
    """Ids the namespace's modules hold that its buffer no longer has, oldest module first."""
    if not svc.buffer.has_namespace(namespace):
        return []
    return _missing(svc, namespace, registry.list_modules(svc.path, namespace))


def _missing(
    svc: Services, namespace: str, modules: Sequence[registry.ModuleManifest]
) -> list[str]:
    listed = list(dict.fromkeys(rid for m in modules for rid in m.record_ids))
    present = {r.id for r in svc.buffer.get_existing(namespace, listed)} if listed else set()
    return [rid for rid in listed if rid not in present]


def _quarantine(svc: Services, namespace: str, m: registry.ModuleManifest, lost: int) -> None:
    """Take a module out of routing but keep its files: it may be the last copy of facts
    whose records a broken buffer lost."""
    registry.quarantine_module(
        svc.path,
        namespace,
        m.module_id,
        f"{lost} of its {len(m.record_ids)} records are missing from the buffer "
        f"({buffer_location(svc)}); its other records are retrained. If the buffer was wrong, "
        "the adapter is still here",
    )
    svc.generator_if_loaded_forget(m.module_id)


def _mass_loss(
    svc: Services, namespace: str, lost: set[str], listed: int, modules: int
) -> MissingRecordsError | None:
    """The refusal when records missing on their own are too many to be deletions."""
    if len(lost) < MASS_LOSS_MIN_RECORDS or len(lost) <= MASS_LOSS_SHARE * listed:
        return None
    return MissingRecordsError(
        f"{len(lost)} of the {listed} records held by the {modules} module(s) of namespace "
        f"{namespace!r} are missing from the buffer ({buffer_location(svc)}). That many point "
        "at a lost, restored or misconfigured buffer rather than at deletions, and the modules "
        "may be the only copy left of those facts, so nothing was changed. Check the buffer: "
        f"chroma_url and chroma_database in {CONFIG_NAME} (or --chroma-url), the Chroma "
        "server's data volume, or a restored DIR/chroma; run again once the records are back. "
        "If they were deleted on purpose, forget them deliberately: "
        f"`lora-memory forget {svc.path} -n {namespace} --missing` (Python: "
        "mem.forget(namespace, missing=True)) deletes the modules that hold them and retrains "
        "their other records.",
        namespace=namespace,
        missing_ids=tuple(sorted(lost)),
    )


def buffer_location(svc: Services) -> str:
    """Where the store's buffer lives, for messages (a server URL without its credentials)."""
    if not svc.chroma_url:
        return f"embedded Chroma in {svc.path / 'chroma'}"
    return (
        f"Chroma server {url_for_messages(svc.chroma_url)}, "
        f"database {svc.config.buffer.chroma_database!r}"
    )


def reset_orphans(svc: Services, namespace: str) -> int:
    """Records marked consolidated into a module that no longer exists go back to buffered."""
    if not svc.buffer.has_namespace(namespace):
        return 0
    live = {m.module_id for m in registry.list_modules(svc.path, namespace)}
    consolidated = svc.buffer.get(namespace, where={"status": STATUS_CONSOLIDATED})
    orphans = [r.id for r in consolidated if r.metadata.get("module_id") not in live]
    if orphans:
        svc.buffer.update_metadata(namespace, orphans, {"status": STATUS_BUFFERED, "module_id": ""})
    return len(orphans)
