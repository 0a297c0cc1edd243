"""Background consolidation in the service: requested or scheduled, one training job at a time.

A namespace gets a job when a client asks (``POST .../consolidate`` with ``"wait": false``)
or, on a schedule, when it holds at least ``min_records`` buffered records at one of its
checks, every ``every_s`` seconds. Schedules are per namespace pattern (the first
:class:`Schedule` whose pattern matches; the service's default for the others). One job runs
at a time (one model, one device); a namespace has at most one job queued or running. A cron
``consolidate`` on the same store at the same time is safe: whichever starts second on a
namespace finds its lock held, and the job says ``locked``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import InvalidInputError, LockHeldError, RecordNotFoundError
from ..memory import LoRAMemory

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "locked", "failed"]
KEEP_FINISHED = 200
"""Finished jobs remembered for ``/v1/jobs`` (the oldest are forgotten first)."""


@dataclass(frozen=True)
class Schedule:
    """When the namespaces ``pattern`` matches (shell-style, as key grants) are checked:
    every ``every_s`` seconds, due with ``min_records`` buffered records or more."""

    pattern: str
    every_s: float
    min_records: int = 8

    def matches(self, namespace: str) -> bool:
        return fnmatch.fnmatchcase(namespace, self.pattern)

    @classmethod
    def parse(cls, spec: str, default_min: int = 8) -> Schedule:
        """``PATTERN=SECONDS[:MIN_RECORDS]``, e.g. ``team-*=600:4``."""
        pattern, sep, rest = spec.rpartition("=")
        every, _, least = rest.partition(":")
        try:
            out = cls(pattern, float(every), int(least) if least else default_min)
        except ValueError:
            out = None
        if not sep or not pattern or out is None or out.every_s <= 0 or out.min_records < 1:
            raise InvalidInputError(
                f"a schedule is PATTERN=SECONDS[:MIN_RECORDS] with SECONDS > 0 and "
                f"MIN_RECORDS >= 1, e.g. 'team-*=600:4'; got {spec!r}"
            )
        return out


@dataclass
class Job:
    """One consolidation of one namespace, as ``/v1/jobs`` shows it."""

    job_id: str
    namespace: str
    reason: Literal["requested", "scheduled"]
    status: JobStatus = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobRunner:
    """Runs consolidation jobs for one service, one at a time.

    Args:
        mem: the service's store.
        every_s: seconds between the scheduled checks of a namespace no schedule matches
            (None: those are consolidated only when a client asks).
        min_records: buffered records such a namespace needs for a scheduled job.
        options: consolidation options for scheduled jobs.
        schedules: per-pattern schedules, the first match wins.
    """

    def __init__(
        self,
        mem: LoRAMemory,
        *,
        every_s: float | None = None,
        min_records: int = 8,
        options: Mapping[str, Any] | None = None,
        schedules: Sequence[Schedule] = (),
    ) -> None:
        self.mem = mem
        self.schedules = list(schedules)
        self.default = Schedule("*", every_s, min_records) if every_s else None
        self.options = dict(options or {})
        self._checked: dict[str, float] = {}  # namespace -> when it was last checked
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        # submit() runs on the service's worker threads (sync routes) as well as on the loop
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._tasks.append(asyncio.create_task(self._work(), name="lora-memory-jobs"))
        if self.default is not None or self.schedules:
            self._tasks.append(asyncio.create_task(self._schedule(), name="lora-memory-cron"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    # ---- jobs --------------------------------------------------------------------------
    def submit(
        self,
        namespace: str,
        *,
        reason: Literal["requested", "scheduled"] = "requested",
        options: Mapping[str, Any] | None = None,
    ) -> Job:
        """Queue a job for ``namespace``, or return the one already queued or running. Safe
        from any thread: the queue is fed on the loop's own thread."""
        if self._queue is None or self._loop is None:
            raise RuntimeError("JobRunner.start() was not awaited (the app's lifespan runs it)")
        with self._lock:
            for job in self._jobs.values():
                if job.namespace == namespace and job.status in ("queued", "running"):
                    return job
            job = Job(uuid.uuid4().hex[:16], namespace, reason, options=dict(options or {}))
            self._jobs[job.job_id] = job
            self._forget_old()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, job)
        return job

    def jobs(self) -> list[Job]:
        """Every remembered job, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def job(self, job_id: str, visible: Callable[[str], bool] = lambda namespace: True) -> Job:
        """The job ``job_id``, when its namespace is ``visible`` to the caller; a job the caller
        may not see is not found, as an unknown one."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not visible(job.namespace):
            raise RecordNotFoundError(f"no job {job_id!r} (finished jobs are kept a while)")
        return job

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status not in ("queued", "running")]
        for j in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[j.job_id]

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            job.status, job.started_at = "running", time.time()
            try:
                [report] = await asyncio.to_thread(
                    self.mem.consolidate, job.namespace, **job.options
                )
                job.report, job.status = report.to_dict(), "done"
            except LockHeldError as e:  # cron (or another service) is consolidating it
                job.status, job.error = "locked", str(e)
            except Exception as e:
                logger.error("consolidation job %s failed", job.job_id, exc_info=True)
                job.status, job.error = "failed", f"{type(e).__name__}: {e}"
            job.finished_at = time.time()

    def schedule_for(self, namespace: str) -> Schedule | None:
        """The namespace's schedule: the first pattern that matches, else the default."""
        return next((r for r in self.schedules if r.matches(namespace)), self.default)

    async def _schedule(self) -> None:
        rules = [*self.schedules, *([self.default] if self.default else [])]
        tick = max(0.05, min(r.every_s for r in rules) / 2)
        started = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                due = await asyncio.to_thread(self._due, time.monotonic(), started)
            except Exception:  # a failed check must not end the schedule
                logger.error("scheduled consolidation check failed", exc_info=True)
                continue
            for ns in due:
                self.submit(ns, reason="scheduled", options=self.options)

    def _due(self, now: float, started: float) -> list[str]:
        """Namespaces whose check is due now and that hold enough buffered records."""
        due = []
        for ns in self.mem.namespaces():
            rule = self.schedule_for(ns)
            if rule is None or now - self._checked.get(ns, started) < rule.every_s:
                continue
            self._checked[ns] = now
            if self.mem.count(ns, status="buffered") >= rule.min_records:
                due.append(ns)
        return due
