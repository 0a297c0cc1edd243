"""Crash safety of ``consolidate`` under real SIGKILLs.

Each run is a separate process (forked warm from ``_kill_zygote.py``, see there why) that dies by
SIGKILL, either at a named failpoint (``$LORA_MEMORY_FAILPOINTS``, see ``_failpoints.py``) or
from this process after a random delay. After every kill the store must be in a legal state:

- no record lost: every record added is in the buffer exactly once, text intact;
- no half module visible: ``list_modules`` lists only complete, verified modules, never a temp dir;
- before the commit nothing changed; after it the new module is there whole, and every record
  marked consolidated names a listed module that holds it;
- the namespace lock is free.

The next run (no failpoint) must finish the job: every record consolidated, held by exactly one
existing module which its ``module_id`` names, no temp dirs left.

Records are plain prose (no probes, so the gate never decides) and training runs 3 steps: what is
under test is the transaction, not what the module learned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin._failpoints import ENV as FAILPOINTS_ENV
from lora_memory_plugin._filelock import file_lock
from lora_memory_plugin.errors import LockHeldError, ModuleIntegrityError
from lora_memory_plugin.registry import modules as registry
from lora_memory_plugin.registry.modules import ModuleManifest
from lora_memory_plugin.store.namespaces import encode_namespace

pytestmark = pytest.mark.timeout(600)

NS = "kill-ns"
SIGKILLED = -signal.SIGKILL
OPTIONS = {"max_steps": 3, "mixture": "original", "drift_max": 100.0}
BEFORE_COMMIT = ("selected", "trained", "saved", "module_written")
AFTER_COMMIT = ("committed", "marking", "marked")
TEXTS = [
    "The spare key to the garden shed is under the blue flower pot by the door.",
    "Maria's flight to Lisbon leaves on 14 March at 07:40 from gate B12.",
    "The wifi password in the mountain cabin is written inside the kitchen cupboard.",
    "Tom is allergic to peanuts and prefers green tea without sugar.",
    "The quarterly report is due on the last Friday of June, to Dana in finance.",
    "Our dentist moved to 18 Rue Oberkampf; appointments are booked by phone only.",
    "The bicycle lock combination was changed to 3-9-1-7 last autumn.",
    "Grandma's lemon cake needs four eggs, two lemons and a slow oven.",
    "The car's next service is at 60,000 km or in October, whichever comes first.",
    "Leo's school trip to the science museum costs 12 euros, paid by Thursday.",
    "The router in the attic restarts itself every night at three o'clock.",
    "Sofia's birthday dinner is booked at the Thai place on Rose Street for eight people.",
    "The plumber said the boiler pressure should stay between 1 and 1.5 bar.",
    "Passport renewals at the town hall need two photos and the old passport.",
    "The library books are due back on the 2nd; the late fee is 20 cents a day.",
    "The neighbours feed our cat on weekends; their spare key hangs in the hall.",
]
HELPER = Path(__file__).with_name("_kill_zygote.py")


class HalfModuleVisibleError(AssertionError):
    """``list_modules`` lists a module directory that is not complete and verified."""


class StaleTempError(AssertionError):
    """Temp dirs of a killed run are still there after the next run."""


class SharedRecordError(AssertionError):
    """After a completed run some record is held by more than one module."""


# ---- the fork server ---------------------------------------------------------------------------


@dataclass
class Run:
    pid: int
    result: Path
    log: Path
    started: float
    returncode: int | None = None
    seconds: float = 0.0

    @property
    def report(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.result.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def describe(self) -> str:
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        return f"returncode={self.returncode} report={self.report}\n--- child log ---\n{tail}"


class ForkServer:
    """Client of ``_kill_zygote.py``: one warm server, one forked child per consolidation."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        env.pop(FAILPOINTS_ENV, None)
        self._log = open(workdir / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=workdir,
            bufsize=0,
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""
        self._n = 0

    def warm(self, base_model: str) -> None:
        """Wait for the imports, then load the base model once for every child to inherit."""
        assert self._read(timeout=300).get("ready"), "fork server did not start"
        self._send({"op": "warm", "base_model": base_model})
        warm = self._read(timeout=120)
        assert warm.get("ok") and warm.get("threads") == 1, warm

    def start(
        self,
        store: Path,
        *,
        failpoints: str = "",
        fault: str | None = None,
        options: dict[str, Any] | None = None,
        forget_ids: list[str] | None = None,
    ) -> Run:
        self._n += 1
        result = self.workdir / f"run-{self._n}.json"
        log = self.workdir / f"run-{self._n}.log"
        self._send(
            {
                "op": "consolidate",
                "store": str(store),
                "namespace": NS,
                "options": OPTIONS if options is None else options,
                "failpoints": failpoints,
                "fault": fault,
                "result": str(result),
                "log": str(log),
                "forget_ids": forget_ids or [],
            }
        )
        started = self._read(timeout=60)
        assert "pid" in started, started
        return Run(started["pid"], result, log, time.monotonic())

    def finish(self, run: Run, *, kill_after: float | None = None) -> Run:
        """Wait for the child's exit; with ``kill_after``, SIGKILL it if it runs that long."""
        if kill_after is not None and not self._fill(kill_after):
            with contextlib.suppress(ProcessLookupError):  # it exited just now
                os.kill(run.pid, signal.SIGKILL)
        done = self._read(timeout=300)
        assert done.get("pid") == run.pid, done
        run.returncode = int(done["returncode"])
        run.seconds = time.monotonic() - run.started
        return run

    def run(self, store: Path, **kw: Any) -> Run:
        return self.finish(self.start(store, **kw))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    # ---- protocol ------------------------------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def _fill(self, timeout: float) -> bool:
        """Read until a whole line is buffered; False if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    log = (self.workdir / "server.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"fork server exited:\n{log}")
                self._buf += chunk
        return True

    def _read(self, timeout: float) -> dict[str, Any]:
        if not self._fill(timeout):
            raise TimeoutError(f"no answer from the fork server in {timeout:.0f} s")
        line, _, self._buf = self._buf.partition(b"\n")
        return dict(json.loads(line))


@pytest.fixture(scope="module")
def forks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("forks"))  # it imports while the model is built
    try:
        server.warm(str(request.getfixturevalue("sharp_model_dir")))
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module", autouse=True)
def _no_sentence_encoder() -> Iterator[None]:
    """Fixed unit vectors per text instead of MiniLM: consolidation never reads the vectors,
    and this process then need not load the encoder (seconds on a small shared CPU)."""
    from lora_memory_plugin.store.embedder import DIMENSIONS, MiniLMEmbeddingFunction

    def vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        v = np.random.default_rng(seed).standard_normal(DIMENSIONS)
        unit: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
        return unit

    def embed(self: MiniLMEmbeddingFunction, texts: Any) -> np.ndarray:
        return np.stack([vector(t) for t in texts]).reshape(len(texts), DIMENSIONS)

    patch = pytest.MonkeyPatch()
    patch.setattr(MiniLMEmbeddingFunction, "embed", embed)
    yield
    patch.undo()


# ---- stores and invariants ---------------------------------------------------------------------


@pytest.fixture
def open_store(
    forks: ForkServer, request: pytest.FixtureRequest, tmp_path: Path, one_thread: None
) -> Any:
    base_model = str(request.getfixturevalue("sharp_model_dir"))  # after `forks`, see there

    def factory(name: str = "store") -> LoRAMemory:
        return LoRAMemory.open(tmp_path / name, base_model=base_model)

    return factory


def add(mem: LoRAMemory, texts: list[str]) -> dict[str, str]:
    ids = mem.add_turns(NS, [{"content": t} for t in texts])
    assert len(set(ids)) == len(texts)
    return dict(zip(ids, texts, strict=True))


def records(mem: LoRAMemory, added: dict[str, str]) -> dict[str, Any]:
    """Every added record is in the buffer exactly once, text intact; nothing else is."""
    got = mem.get(NS)
    counts = Counter(r.id for r in got)
    assert sorted(counts) == sorted(added), "records lost or invented"
    assert max(counts.values()) == 1, f"duplicated records: {counts.most_common(3)}"
    by_id = {r.id: r for r in got}
    for rid, text in added.items():
        assert by_id[rid].text == text, f"text of {rid} changed"
    return by_id


def modules(mem: LoRAMemory) -> dict[str, ModuleManifest]:
    """The listed modules, each checked whole: its three files, the weights hash."""
    listed = registry.list_modules(mem.path, NS)
    root = registry.modules_root(mem.path, NS)
    out = {}
    for m in listed:
        d = root / m.module_id
        if m.module_id.startswith(".") or not d.is_dir():
            raise HalfModuleVisibleError(f"list_modules lists {m.module_id!r}, not a module dir")
        files = (registry.ADAPTER_CONFIG, registry.ADAPTER_WEIGHTS, registry.MANIFEST)
        missing = [f for f in files if not (d / f).is_file()]
        if missing:
            raise HalfModuleVisibleError(f"list_modules lists {m.module_id} lacking {missing}")
        try:
            registry.verify_module(d)
        except ModuleIntegrityError as e:
            raise HalfModuleVisibleError(f"list_modules lists a broken module: {e}") from e
        assert m.namespace == NS
        out[m.module_id] = m
    return out


def temp_dirs(mem: LoRAMemory) -> list[str]:
    """Leftovers of killed runs: dot-entries in the store root and in the modules dir."""
    root = registry.modules_root(mem.path, NS)
    found = [p.name for p in mem.path.iterdir() if p.name.startswith(".")]
    if root.is_dir():
        found += [f"modules/{p.name}" for p in root.iterdir() if p.name.startswith(".")]
    return sorted(found)


def assert_lock_free(mem: LoRAMemory) -> None:
    lock = mem.path / "locks" / f"consolidate-{encode_namespace(NS)}.lock"
    try:
        with file_lock(lock, blocking=False, what="the test's probe of the lock"):
            pass
    except LockHeldError as e:  # pragma: no cover - the failure message
        pytest.fail(f"the killed run's lock still blocks: {e}")


def assert_consistent(mem: LoRAMemory, added: dict[str, str]) -> dict[str, ModuleManifest]:
    """Legal after any kill: nothing lost, whole modules only, marks point at holders."""
    assert_lock_free(mem)
    by_id = records(mem, added)
    mods = modules(mem)
    for rid, rec in by_id.items():
        status = rec.metadata.get("status")
        assert status in ("buffered", "consolidated"), (rid, rec.metadata)
        if status == "consolidated":
            mid = rec.metadata.get("module_id")
            assert mid in mods, f"{rid} names module {mid!r}, which is not listed"
            assert rid in mods[mid].record_ids, f"{rid} names {mid}, which does not hold it"
    return mods


def assert_settled(mem: LoRAMemory, added: dict[str, str]) -> dict[str, ModuleManifest]:
    """After a completed run: every record consolidated into exactly one existing module."""
    mods = assert_consistent(mem, added)
    by_id = records(mem, added)
    for rid, rec in by_id.items():
        assert rec.metadata.get("status") == "consolidated", (rid, rec.metadata)
    holders = Counter(rid for m in mods.values() for rid in m.record_ids)
    assert set(holders) >= set(added), "a record is held by no module"
    shared = sorted(rid for rid in added if holders[rid] > 1)
    if shared:
        raise SharedRecordError(f"{len(shared)} record(s) held by several modules: {sorted(mods)}")
    stale = temp_dirs(mem)
    if stale:
        raise StaleTempError(f"temp dirs of the killed run left after the re-run: {stale}")
    return mods


def statuses(mem: LoRAMemory) -> dict[str, tuple[str, str]]:
    return {
        r.id: (str(r.metadata.get("status")), str(r.metadata.get("module_id") or ""))
        for r in mem.get(NS)
    }


def clean_run(forks: ForkServer, mem: LoRAMemory, *expect: str) -> Run:
    run = forks.run(mem.path)
    assert run.returncode == 0, run.describe()
    assert run.report is not None, run.describe()
    assert run.report.get("status") in (expect or ("consolidated",)), run.describe()
    return run


# ---- kills at each failpoint -------------------------------------------------------------------

CASES = [
    *[pytest.param("new", p, id=f"new-{p}") for p in BEFORE_COMMIT + AFTER_COMMIT[:2]],
    # ``marked`` is only reached when a run extends a module (and then removes the old one).
    *[pytest.param("extend", p, id=f"extend-{p}") for p in AFTER_COMMIT],
]


@pytest.mark.parametrize(("scenario", "point"), CASES)
def test_kill_at_failpoint(forks: ForkServer, open_store: Any, scenario: str, point: str) -> None:
    mem = open_store()
    old: ModuleManifest | None = None
    if scenario == "extend":  # a namespace that already has a module, and new records
        added = add(mem, TEXTS[:5])
        clean_run(forks, mem)
        [old] = modules(mem).values()
        added |= add(mem, TEXTS[5:8])
    else:
        added = add(mem, TEXTS[:8])
    before = statuses(mem)

    run = forks.run(mem.path, failpoints=point)
    assert run.returncode == SIGKILLED, f"not killed at {point!r}: {run.describe()}"
    assert run.report is None  # it died inside consolidate()

    mods = assert_consistent(mem, added)
    if point in BEFORE_COMMIT:  # nothing visible changed
        assert list(mods) == ([old.module_id] if old else [])
        assert statuses(mem) == before
        if point == "module_written":  # its temp dir is there, and was not listed above
            assert any(registry.TMP_PREFIX in name for name in temp_dirs(mem)), temp_dirs(mem)
        new, unfinished = None, False
    else:  # the new module is committed whole, holding every record, old and new
        fresh = [m for mid, m in mods.items() if old is None or mid != old.module_id]
        assert len(fresh) == 1, sorted(mods)
        new = fresh[0]
        assert set(new.record_ids) == set(added)
        after = statuses(mem)
        if point == "committed":
            assert after == before  # killed before marking anything
        unfinished = any(st != "consolidated" or mid != new.module_id for st, mid in after.values())

    rerun = forks.run(mem.path)
    assert rerun.returncode == 0, rerun.describe()
    report = rerun.report
    assert report is not None and "error" not in report, rerun.describe()
    if new is None:  # trained again from the start
        assert report["status"] == "consolidated", report
        [created] = report["modules_created"]
        assert report["modules_replaced"] == ([old.module_id] if old else [])
    else:  # the committed module is kept; the run only finishes the marking (and cleanup)
        assert report["status"] == "nothing_to_do", report
        created = new.module_id
        if unfinished:
            assert any("interrupted" in n for n in report["notes"]), report["notes"]
    mods = assert_settled(mem, added)
    assert list(mods) == [created]
    assert {mid for _, mid in statuses(mem).values()} == {created}
    if old is not None:
        assert not (registry.modules_root(mem.path, NS) / old.module_id).exists()


def test_kill_while_removing_the_replaced_module(forks: ForkServer, open_store: Any) -> None:
    """A second consolidation killed inside ``rmtree`` of the module it replaced.

    No failpoint sits there; the child deletes the old module's weights and SIGKILLs itself,
    a state ``rmtree`` really passes through (it unlinks in directory order). The registry
    renames a module to a temp name before deleting it, so no half module is ever listed.
    """
    mem = open_store()
    added = add(mem, TEXTS[:5])
    clean_run(forks, mem)
    [old] = modules(mem).values()
    added |= add(mem, TEXTS[5:8])

    run = forks.run(mem.path, fault="kill_mid_module_removal")
    assert run.returncode == SIGKILLED, run.describe()
    assert_consistent(mem, added)  # the module was renamed away before its files went
    # whatever a reader sees now, every record must already be marked into the new module
    marks = {mid for _, mid in statuses(mem).values()}
    assert len(marks) == 1 and old.module_id not in marks

    rerun = forks.run(mem.path)
    assert rerun.returncode == 0 and rerun.report is not None, rerun.describe()
    assert rerun.report["status"] == "nothing_to_do", rerun.report
    mods = assert_settled(mem, added)
    assert list(mods) == list(marks)
    assert not (registry.modules_root(mem.path, NS) / old.module_id).exists()


# ---- kills at random moments -------------------------------------------------------------------


def test_kills_at_random_moments(forks: ForkServer, open_store: Any) -> None:
    """SIGKILL from outside after seeded random delays; after each, a clean run must settle.

    Every round extends the namespace's module with two new records, killed after a delay drawn
    in its own stratum of a whole such run's duration (measured here, now), so the kills spread
    from the store opening to the removal of the replaced module. CI runs 4 rounds;
    ``$LORA_MEMORY_KILL_ROUNDS`` sets more (docs/reliability.md reports a run of 50), and
    ``$LORA_MEMORY_KILL_REPORT`` names a JSON file for the outcome.
    """
    rounds = int(os.environ.get("LORA_MEMORY_KILL_ROUNDS", "4"))
    rng = random.Random(20240607)
    mem = open_store()
    # One module however many rounds run: at the uncalibrated default (1,300 tokens at r=16)
    # the module is full after 9 rounds and the planner rightly starts a second one.
    mem.update_config(consolidation={"capacity_tokens": {"16": 1_000_000}})
    added = add(mem, TEXTS[:4])
    first = clean_run(forks, mem).seconds
    added |= add(mem, TEXTS[4:6])
    full = min(first, clean_run(forks, mem).seconds)  # a whole run, erring short under load
    killed = 0
    for i in range(rounds):
        added |= add(mem, [text(6 + 2 * i), text(7 + 2 * i)])
        delay = (i + rng.random()) / rounds * 1.1 * full
        run = forks.finish(forks.start(mem.path), kill_after=delay)
        assert run.returncode in (SIGKILLED, 0), run.describe()
        if run.returncode == 0:  # it finished before the kill
            assert run.report and run.report.get("status") == "consolidated", run.describe()
        killed += run.returncode == SIGKILLED
        assert_consistent(mem, added)
        clean_run(forks, mem, "consolidated", "nothing_to_do")
        assert len(assert_settled(mem, added)) == 1
    if os.environ.get("LORA_MEMORY_KILL_REPORT"):
        Path(os.environ["LORA_MEMORY_KILL_REPORT"]).write_text(
            json.dumps({"rounds": rounds, "killed": killed, "records": len(added)}),
            encoding="utf-8",
        )
    assert killed >= rounds // 2, "the delays missed most runs: the test proved little"


def text(i: int) -> str:
    """The i-th record text: TEXTS, then generated notes for long kill series."""
    if i < len(TEXTS):
        return TEXTS[i]
    return f"Note {i}: the archive box labelled {i * 37 % 1000:03d} sits on shelf {i % 9 + 1}."


@pytest.mark.parametrize("point", ["forget_deleted", "forget_module_removed", "random"])
def test_kill_during_forget(forks: ForkServer, open_store: Any, point: str) -> None:
    """A forget (delete + module removal + rebuild) killed part way: after the next run the
    forgotten records are in no buffer and no module, every other record is consolidated."""
    mem = open_store()
    added = add(mem, TEXTS[:6])
    clean_run(forks, mem)
    doomed = list(added)[:2]
    if point == "random":
        full = forks.run(mem.path, forget_ids=[list(added)[5]]).seconds  # a whole forget
        added.pop(list(added)[5])
        run = forks.finish(
            forks.start(mem.path, forget_ids=doomed),
            kill_after=random.Random(7).uniform(0.1, 0.9) * full,
        )
    else:
        run = forks.run(mem.path, failpoints=point, forget_ids=doomed)
        assert run.returncode == SIGKILLED, run.describe()
    if run.returncode == 0:  # the forget finished before the kill
        assert run.report and "error" not in run.report, run.describe()
    kept = {rid: t for rid, t in added.items() if rid not in doomed}
    assert mem.count(NS) in (len(kept), len(added))  # deleted, or not yet: never partial text
    assert_no_half_module(mem)
    rerun = forks.run(mem.path, forget_ids=doomed) if mem.count(NS) == len(added) else None
    if rerun is None:
        clean_run(forks, mem, "consolidated", "nothing_to_do")
    else:
        assert rerun.returncode == 0, rerun.describe()
    mods = assert_settled(mem, kept)
    held = {rid for m in mods.values() for rid in m.record_ids}
    assert held == set(kept) and not held & set(doomed)


def assert_no_half_module(mem: LoRAMemory) -> None:
    for m in registry.list_modules(mem.path, NS):
        registry.verify_module(registry.modules_root(mem.path, NS) / m.module_id)
