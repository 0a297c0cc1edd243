"""``Consolidator``: consolidate, forget and calibrate over one store's :class:`..ports.Services`.

The one entry point into consolidation for the facade and the CLI: it turns options into
:class:`.engine.ConsolidationOptions`, runs one namespace or every namespace (each standing
alone: a failure is that namespace's report, not the run's), and turns a disk failure under a
run into the :class:`..errors.StoreIOError` callers catch. Namespaces arrive validated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, LockHeldError, StoreIOError, UnknownNamespaceError
from ..types import ConsolidationReport, ForgetReport
from . import engine
from .capacity import calibrate
from .engine import ConsolidationOptions
from .forget import forget

if TYPE_CHECKING:
    from ..ports import Services
    from .capacity import CalibrationReport

logger = logging.getLogger(__name__)


class Consolidator:
    """Trains one store's buffered records into modules, and takes them back out."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def consolidate(
        self, namespace: str | None = None, *, progress: bool = False, **options: Any
    ) -> list[ConsolidationReport]:
        """One namespace (its errors raise), or every namespace (``None``: each one's error,
        or a lock another process holds, becomes its report and the others go on)."""
        opts = check_options(options)
        if namespace is not None:
            self._require(namespace)
            return [self._one(namespace, opts, progress)]
        return [self._one_of_all(ns, opts, progress) for ns in self.svc.buffer.namespaces()]

    def forget(
        self,
        namespace: str,
        ids: Sequence[str] | None = None,
        *,
        where: dict[str, Any] | None = None,
        missing: bool = False,
        rebuild: bool = True,
        progress: bool = False,
        **options: Any,
    ) -> ForgetReport:
        self._require(namespace)
        opts = check_options(options)

        def again() -> ConsolidationReport:  # under the lock forget holds
            return engine.run_locked(self.svc, namespace, opts, progress=progress)

        try:
            return forget(
                self.svc, namespace, ids, where, missing=missing, rebuild=again if rebuild else None
            )
        except OSError as e:
            raise io_error("forget", namespace, e) from e

    def calibrate(
        self, ranks: Sequence[int] = (4, 16), *, progress: bool = False, **options: Any
    ) -> CalibrationReport:
        try:
            return calibrate(self.svc, ranks, progress=progress, **options)
        except TypeError as e:
            raise InvalidInputError(f"unknown calibration option: {e}") from e

    def _require(self, namespace: str) -> None:
        if not self.svc.buffer.has_namespace(namespace):
            raise UnknownNamespaceError(f"namespace {namespace!r} has no records in this store")

    def _one(self, ns: str, opts: ConsolidationOptions, progress: bool) -> ConsolidationReport:
        try:
            return engine.consolidate_namespace(self.svc, ns, opts, progress=progress)
        except OSError as e:
            raise io_error("consolidation", ns, e) from e

    def _one_of_all(
        self, ns: str, opts: ConsolidationOptions, progress: bool
    ) -> ConsolidationReport:
        return standing_alone(ns, lambda: self._one(ns, opts, progress))


def standing_alone(namespace: str, run: Callable[[], ConsolidationReport]) -> ConsolidationReport:
    """``run()``'s report, or the report of its failure: one namespace of a run over many.

    A cron job consolidates every namespace in one run; a record that breaks training, or a
    namespace whose buffer lost its records, must not starve the namespaces after it. A lock
    another process holds is ``locked`` (not a failure); any other error is ``failed``, with its
    class and message in the notes. KeyboardInterrupt and SystemExit still stop the run.
    """
    t0 = time.perf_counter()
    try:
        return run()
    except LockHeldError as e:
        return ConsolidationReport(namespace, "locked", notes=(str(e),))
    except Exception as e:
        logger.error(
            "consolidation of %r failed; going on with the others", namespace, exc_info=True
        )
        return ConsolidationReport(
            namespace,
            "failed",
            seconds=time.perf_counter() - t0,
            notes=(f"{type(e).__name__}: {e}",),
        )


def check_options(options: Mapping[str, Any]) -> ConsolidationOptions:
    """``consolidate()``'s keyword options, checked (InvalidInputError for an unknown one or a
    bad value)."""
    try:
        return ConsolidationOptions(**options)
    except TypeError as e:
        raise InvalidInputError(f"unknown consolidation option: {e}") from e


def io_error(what: str, namespace: str, e: OSError) -> StoreIOError:
    """A disk failure under a consolidation or forget, as the typed error callers catch."""
    return StoreIOError(
        f"{what} of {namespace!r} stopped: the store's disk failed ({e.strerror or e}); nothing "
        "stored was lost (a half-written module is removed, records keep their state): free "
        f"space or fix the disk, then run the {what} again",
        e.errno,
    )


__all__ = ["Consolidator", "check_options", "io_error", "standing_alone"]
