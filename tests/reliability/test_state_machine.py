"""A stateful test: whatever the order of calls, every record and module is where it belongs.

Hypothesis drives one fresh store per example through ``add`` / ``delete`` / ``forget`` /
``consolidate`` / ``ask`` / ``reopen`` on two namespaces (they differ only in case), with facts
from a small vocabulary, consolidated on the sharpened tiny model (see tests/conftest.py) in
small modules so a namespace holds several. The test keeps a model of the store:

* ``live[ns]``: the records the namespace holds (id -> text);
* ``deleted[ns]``: ids removed by ``delete`` since the namespace's last repair. ``delete``
  promises only the buffer: a module may list such an id until the next ``consolidate`` (or
  ``forget``) of the namespace quarantines it, unless so many are missing that the repair
  refuses (MissingRecordsError) and changes nothing;
* ``forgotten[ns]``: ids removed by ``forget``: no module directory -- committed or
  quarantined -- may list one once ``forget`` returns.

Record ids are content hashes, so writing a removed text again brings its id back to life.

Invariants, after every step: the buffer holds exactly ``live`` (ids and texts); each committed
module lists only live or just-deleted ids, and a record marked consolidated names a committed
module listing it; every module directory is whole (``registry.verify_module``) and none is left
half-written or half-removed (temp dirs) or listed by a forget intent; rag answers every
namespace with records, citing only live records. The rules check what each call reports, that
a refused repair changed nothing, and that a call on one namespace left the other as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lora_memory_plugin import LoRAMemory, MissingRecordsError, UnknownNamespaceError
from lora_memory_plugin.consolidation.forget import MASS_LOSS_MIN_RECORDS, MASS_LOSS_SHARE
from lora_memory_plugin.registry import modules as registry
from lora_memory_plugin.store.namespaces import encode_namespace

pytestmark = pytest.mark.timeout(600)

NAMESPACES = ("équipe-1", "Équipe-1")  # one slug (ASCII hint), two namespaces
FACTS = [
    ("What is the code of box 1?", "4471"),
    ("What is the code of box 2?", "9302"),
    ("Where does Bob live?", "Lyon"),
    ("Where does Alice work?", "Porto"),
    ("What is my locker code?", "1185"),
    ("What is the colour of door 7?", "green"),
]
TEXTS = [f"Question: {q} Answer: {a}" for q, a in FACTS]
QUESTIONS = [q for q, _ in FACTS]
GHOST = "t-" + "0" * 32  # a well-formed id no text hashes to
RANK = 16
MODULE_TOKENS = 45  # a fact is 13-25 tokens: two or so per module, so forget has neighbours
FAST = {"lr": 1e-2, "rank": RANK, "max_steps": 400}  # as tests/consolidation: seconds a module
RAN = ("consolidated", "partial", "kept_buffered", "nothing_to_do")

NS = st.sampled_from(NAMESPACES)

_model_dir: Path | None = None  # the base model, set by the fixture below for each test run


@pytest.fixture(autouse=True)
def _base_model(sharp_model_dir: Path, one_thread: None) -> Any:
    """State machines cannot take fixtures: hand them the session's model through a global."""
    global _model_dir  # noqa: PLW0603
    _model_dir = sharp_model_dir
    yield
    _model_dir = None


def refuses(modules: list[registry.ModuleManifest], live: set[str], doomed: set[str]) -> bool:
    """Does the repair (forget / consolidate) refuse, per forget.py's documented rule? Modules
    holding a ``doomed`` id go; of the ids the others list, those missing from the buffer are
    "lost": at least MASS_LOSS_MIN_RECORDS and more than MASS_LOSS_SHARE of them is a refusal."""
    kept = [m for m in modules if doomed.isdisjoint(m.record_ids)]
    listed = {rid for m in kept for rid in m.record_ids}
    lost = listed - live - doomed
    return len(lost) >= MASS_LOSS_MIN_RECORDS and len(lost) > MASS_LOSS_SHARE * len(listed)


class MemoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert _model_dir is not None, "run through pytest: the _base_model fixture sets it"
        self.model_dir = _model_dir
        self.tmp = Path(tempfile.mkdtemp(prefix="lm-state-"))
        self.path = self.tmp / "store"
        self.mem = LoRAMemory.open(self.path, base_model=str(self.model_dir))
        self.mem.update_config(consolidation={"capacity_tokens": {str(RANK): MODULE_TOKENS}})
        self.live: dict[str, dict[str, str]] = {}  # namespaces written to -> id -> text
        self.known: dict[str, dict[str, str]] = {ns: {} for ns in NAMESPACES}  # ever written
        self.deleted: dict[str, set[str]] = {ns: set() for ns in NAMESPACES}
        self.forgotten: dict[str, set[str]] = {ns: set() for ns in NAMESPACES}
        self.text_ids: dict[str, str] = {}  # text -> id: the same in every namespace
        self._fingerprint: str | None = None

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------
    def pick_ids(self, ns: str, data: st.DataObject) -> list[str]:
        """1-3 ids (repeats allowed) among those ever written to ``ns``, or an unknown one."""
        pool = [*sorted(self.known[ns]), GHOST]
        return data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3), label="ids")

    def committed(self, ns: str) -> set[str]:
        return {m.module_id for m in self.mem.modules(ns)}

    def snapshot(self, ns: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """A namespace's module dirs and records' state: what a call on another namespace, or
        a refused repair, must leave as it was."""
        root = registry.modules_root(self.path, ns)
        dirs = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        if ns not in self.live:
            return dirs, []
        recs = sorted(
            (r.id, r.metadata["status"], r.metadata["module_id"]) for r in self.mem.get(ns)
        )
        return dirs, recs

    def others(self, ns: str | None) -> dict[str, Any]:
        return {o: self.snapshot(o) for o in NAMESPACES if o != ns}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self.mem.generator().fingerprint
        return self._fingerprint

    def check_report(self, ns: str, report: Any) -> None:
        """A consolidation that ran: its new modules are committed, the ones it replaced gone."""
        assert report.namespace == ns and report.status in RAN, report
        event(f"consolidation: {report.status}")
        committed = self.committed(ns)
        assert set(report.modules_created) <= committed, report
        assert committed.isdisjoint(report.modules_replaced), report
        if report.status == "consolidated":  # every buffered record went into a module
            assert self.mem.count(ns, status="buffered") == 0, report
        if report.status in ("kept_buffered", "nothing_to_do"):
            assert report.modules_created == (), report

    # ---- rules -----------------------------------------------------------------------------
    @initialize(ns=NS, texts=st.lists(st.sampled_from(TEXTS), min_size=2, max_size=4, unique=True))
    def seed(self, ns: str, texts: list[str]) -> None:
        """Start from a namespace with modules, so that a few steps reach deletions, quarantines,
        refusals and forgets of consolidated records."""
        self.write(ns, texts)
        self.run_consolidation(ns)

    @rule(ns=NS, texts=st.lists(st.sampled_from(TEXTS), min_size=1, max_size=3))
    def add(self, ns: str, texts: list[str]) -> None:
        self.write(ns, texts)

    def write(self, ns: str, texts: list[str]) -> None:
        before = self.others(ns)
        if len(texts) == 1:
            ids = [self.mem.add_turn(ns, texts[0])]
        else:
            ids = self.mem.add_turns(ns, [{"content": t} for t in texts])
        assert len(ids) == len(texts)
        live = self.live.setdefault(ns, {})
        for rid, text in zip(ids, texts, strict=True):
            assert self.text_ids.setdefault(text, rid) == rid, "one text, one id (content hash)"
            live[rid] = text
            self.known[ns][rid] = text
            self.deleted[ns].discard(rid)
            self.forgotten[ns].discard(rid)
        assert self.others(ns) == before

    @rule(ns=NS, data=st.data(), then_consolidate=st.sampled_from((True, False)))
    def delete(self, ns: str, data: st.DataObject, then_consolidate: bool) -> None:
        """``delete``, then (mostly: hypothesis favours the first value) the consolidation that
        repairs the namespace's modules, as a cron job's next run would: one step reaches the
        quarantine, or the refusal of a mass loss."""
        ids = self.pick_ids(ns, data)
        unique = set(ids)
        live = self.live.get(ns, {})
        before = self.others(ns)
        removed = unique & set(live)
        assert self.mem.delete(ns, ids) == len(removed)
        for rid in removed:
            del live[rid]
        self.deleted[ns] |= removed
        assert self.others(ns) == before
        if then_consolidate:
            self.run_consolidation(ns)

    @rule(ns=NS, data=st.data(), missing=st.booleans(), rebuild=st.booleans())
    def forget(self, ns: str, data: st.DataObject, missing: bool, rebuild: bool) -> None:
        if ns not in self.live:
            with pytest.raises(UnknownNamespaceError):
                self.mem.forget(ns, [GHOST], **FAST)
            return
        live = set(self.live[ns])
        modules = self.mem.modules(ns)
        before = self.others(ns)
        if missing:  # the records the modules hold that the buffer lost
            doomed = {rid for m in modules for rid in m.record_ids} - live
            report = self.mem.forget(ns, missing=True, rebuild=rebuild, **FAST)
            assert report.deleted == 0 and report.missing == ()
        else:
            ids = self.pick_ids(ns, data)
            unique = list(dict.fromkeys(ids))
            doomed = set(unique)
            report = self.mem.forget(ns, ids, rebuild=rebuild, **FAST)
            assert report.deleted == len(doomed & live), report
            assert report.missing == tuple(i for i in unique if i not in live), report
        refused = refuses(modules, live, doomed)
        how = "missing=True" if missing else "ids"
        event(f"forget {how}: {len(report.modules_removed)} module(s) removed, refused={refused}")
        holders = {m.module_id for m in modules if not doomed.isdisjoint(m.record_ids)}
        assert holders <= set(report.modules_removed), report
        assert self.committed(ns).isdisjoint(report.modules_removed), report
        if refused or not rebuild:
            assert report.rebuild is None, report
        if report.rebuild is not None:
            self.check_report(ns, report.rebuild)
        for rid in doomed:
            self.live[ns].pop(rid, None)
        self.forgotten[ns] |= doomed
        self.deleted[ns] -= doomed
        if not refused:  # the repair quarantined every module listing a deleted record
            self.deleted[ns].clear()
        assert self.others(ns) == before

    @rule(ns=st.sampled_from((*NAMESPACES, None)))
    def consolidate(self, ns: str | None) -> None:
        self.run_consolidation(ns)

    def run_consolidation(self, ns: str | None) -> None:
        if ns is None:  # every namespace; one whose repair refuses is reported as failed
            expect = {
                n: refuses(self.mem.modules(n), set(lv), set()) for n, lv in self.live.items()
            }
            kept = {n: self.snapshot(n) for n, refused in expect.items() if refused}
            reports = self.mem.consolidate(**FAST)
            assert sorted(r.namespace for r in reports) == sorted(self.live)
            for r in reports:
                if expect[r.namespace]:
                    assert r.status == "failed" and "MissingRecordsError" in r.notes[0], r
                    assert self.snapshot(r.namespace) == kept[r.namespace]
                else:
                    self.check_report(r.namespace, r)
                    self.deleted[r.namespace].clear()
            return
        if ns not in self.live:
            with pytest.raises(UnknownNamespaceError):
                self.mem.consolidate(ns, **FAST)
            return
        before = self.others(ns)
        if refuses(self.mem.modules(ns), set(self.live[ns]), set()):
            kept_as_is = self.snapshot(ns)
            with pytest.raises(MissingRecordsError):
                self.mem.consolidate(ns, **FAST)
            assert self.snapshot(ns) == kept_as_is, "a refused repair changes nothing"
            event("consolidate: refused")
        else:
            [report] = self.mem.consolidate(ns, **FAST)
            self.check_report(ns, report)
            self.deleted[ns].clear()
        assert self.others(ns) == before

    @rule(
        ns=NS,
        question=st.sampled_from(QUESTIONS),
        mode=st.sampled_from(("rag", "lora", "hybrid", "auto")),
    )
    def ask(self, ns: str, question: str, mode: str) -> None:
        if ns not in self.live:
            with pytest.raises(UnknownNamespaceError):
                self.mem.ask(ns, question, mode=mode, max_new_tokens=2)
            return
        ans = self.mem.ask(ns, question, mode=mode, max_new_tokens=2)
        assert ans.requested_mode == mode
        event(f"ask {mode}: answered {ans.mode}")
        assert set(ans.modules) <= self.committed(ns), ans  # never a removed module
        assert {h.id for h in ans.sources} <= set(self.live[ns]), ans

    @rule()
    def reopen(self) -> None:
        del self.mem
        self.mem = LoRAMemory.open(self.path, create=False)
        assert self.mem.config.models.base_model == str(self.model_dir)
        assert self.mem.config.consolidation.capacity_tokens == {str(RANK): MODULE_TOKENS}

    # ---- invariants ------------------------------------------------------------------------
    @invariant()
    def buffer_holds_exactly_the_live_records(self) -> None:
        assert self.mem.namespaces() == sorted(self.live)
        for ns, live in self.live.items():
            got = {r.id: r.text for r in self.mem.get(ns)}
            back = (self.deleted[ns] | self.forgotten[ns]) & set(got)
            assert not back, f"{ns!r}: removed records came back: {back}"
            assert got == live, ns

    @invariant()
    def modules_hold_only_records_they_may(self) -> None:
        for ns in NAMESPACES:
            modules = self.mem.modules(ns)
            assert modules == registry.list_modules(self.path, ns)
            live = self.live.get(ns, {})
            for m in modules:
                assert m.namespace == ns
                stray = set(m.record_ids) - set(live) - self.deleted[ns]
                assert not stray, f"module {m.module_id} of {ns!r} lists removed records {stray}"
            by_id = {m.module_id: m for m in modules}
            for r in self.mem.get(ns) if ns in self.live else ():
                status, owner = r.metadata["status"], r.metadata["module_id"]
                if status == "consolidated":
                    assert owner in by_id and r.id in by_id[owner].record_ids, (ns, r)
                else:
                    assert status == "buffered" and owner == "", (ns, r)

    @invariant()
    def module_dirs_are_whole(self) -> None:
        top = self.path / "modules"
        dirs = {encode_namespace(ns): ns for ns in NAMESPACES}
        for space in sorted(top.iterdir()) if top.is_dir() else ():
            assert space.name in dirs, f"unexpected {space}"
            ns = dirs[space.name]
            committed = set()
            for entry in sorted(space.iterdir()):
                name = entry.name
                assert not name.startswith(registry.TMP_PREFIX), f"leftover temp dir {entry}"
                if name.startswith(registry.QUARANTINE_PREFIX):
                    event("a quarantined module")
                    manifest = registry.read_manifest(entry)
                    assert (entry / registry.QUARANTINE_NOTE).is_file(), entry
                    for f in (registry.ADAPTER_CONFIG, registry.ADAPTER_WEIGHTS):
                        assert (entry / f).is_file(), f"{entry} lost {f}"
                else:
                    assert registry.MODULE_ID.fullmatch(name), f"not a module dir: {entry}"
                    manifest = registry.verify_module(entry, self.fingerprint())
                    committed.add(name)
                assert manifest.namespace == ns, entry
                kept = self.forgotten[ns].intersection(manifest.record_ids)
                assert not kept, f"{entry} still holds forgotten records {kept}"
            assert committed == self.committed(ns), ns
        intents = sorted(p.name for p in (self.path / "locks").glob("forget-*"))
        assert intents == [], f"forget intents left behind: {intents}"

    @invariant()
    def rag_answers_every_namespace_with_records(self) -> None:
        for ns, live in self.live.items():
            if live:
                ans = self.mem.ask(ns, QUESTIONS[0], mode="rag", max_new_tokens=2)
                assert ans.mode == "rag" and {h.id for h in ans.sources} <= set(live), ans


TestMemoryStateMachine = MemoryMachine.TestCase  # a new class at each access: keep this one
TestMemoryStateMachine.settings = settings(
    max_examples=8,
    stateful_step_count=10,
    deadline=None,
    derandomize=True,  # the same examples every run: a steady runtime, failures replay
    database=None,  # nothing written into the repository
    # no shrinking: each example trains modules, so it took minutes; a failure prints its (at
    # most ten) steps as they ran
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
