"""``consolidate``: buffered records -> verified LoRA modules, as a crash-safe transaction.

One run for one namespace, under that namespace's lock (``LockHeldError`` -> CLI exit 3):

1. clean up: temp dirs of killed runs; finish any interrupted marking (records a committed
   module lists but the buffer still shows as buffered);
2. select the buffered records (records added during the run stay buffered for the next one);
3. plan modules by capacity (:mod:`.capacity`): extend the newest module while it has room
   (retrained on its old records plus new ones), start new modules when it is full;
4. per planned module: build training data -- by default context distillation
   (:mod:`.distill`: questions, the teacher's answers, examples with and without context,
   held-out probes), or the previous mixtures (:mod:`.synth`) -- prompted with the same system
   prompt and chat template that ``ask`` uses; train (:mod:`.trainer`; distillation stops on
   held-out agreement, with patience, and before the first evaluation over the drift limit,
   keeping the best weights within it);
5. gate: base-model drift on a control text (:mod:`.drift`) -- over the limit, retrain once
   with a gentler setting, then give up -- then, for distillation, :mod:`.gate` (lora agrees
   with the teacher on held-out probes at ``target``, hybrid no worse than rag), else greedy
   exact match on the module's probes at ``target``; a module that fails leaves its records
   buffered;
6. commit the module directory by atomic rename, then mark its records, then remove the module
   it replaced. A crash before the rename leaves the records buffered; after it, the next run
   finishes the marking from the manifest.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._failpoints import failpoint
from ..config import DISTILL, parse_mixture_names
from ..errors import BackendError, InvalidInputError
from ..generation.prompts import fit_context
from ..registry import modules as registry
from ..store.records import STATUS_BUFFERED, STATUS_CONSOLIDATED
from ..types import ConsolidationReport, ConsolidationStatus, Record

# stages as modules, their functions looked up at each call (tests patch distill.distill, drift.*)
from . import distill as distill_stage
from . import drift as drift_check
from .capacity import (
    BUILTIN_CAPACITY,
    BUILTIN_RANK,
    Capacity,
    PlannedModule,
    choose_capacity,
    open_module_for,
    plan_modules,
)
from .clean import trainable_text
from .distill import DistillResult
from .forget import drop_modules_missing_records
from .gate import (
    gate,
    held_out_evaluator,
    probe_exact_match,
)
from .lock import consolidation_lock
from .synth import synthesize
from .trainer import TrainConfig, save_adapter, train_lora
from .writers import LangChainWriter, LocalWriter

if TYPE_CHECKING:
    from ..ports import Services
    from .trainer import TrainResult

logger = logging.getLogger(__name__)

GENTLER_LR_FACTOR = 0.5  # the drift retry: half the learning rate, same step budget
DISTILL_PATIENCE = 1
"""Distillation stops at the first held-out evaluation (one an epoch, from half the trained
questions recalled) that does not beat the best so far, keeping the best weights (of the later
evaluation on a tie: trained longer). In the 9 Lisbon-story runs logged while tuning, agreement
never rose after an evaluation that had not raised it; a second such evaluation (patience 2)
cost two more steps and one more evaluation, about 11 s, for the same agreement. Waiting for full
recall and 4 evaluations cost 100 s more for the same or a lower agreement."""
DISTILL_PATIENCE_BELOW = 3
"""Patience while held-out agreement is under ``held_out_target``: stopping there commits
nothing. Seed 1 of the story tied at 0.17 on its first two evaluations; patience 1 stopped it
and its gate refused the module."""
DISTILL_EVALUATE_FROM = 0.5
"""Trained-question recall (of an epoch's batches) at which held-out evaluation starts."""


@dataclass
class ConsolidationOptions:
    """Per-run knobs; ``None`` takes the store config's ``[consolidation]`` value."""

    min_records: int = field(default=1, metadata={"help": "Do nothing below this many."})
    max_minutes: float | None = field(default=None, metadata={"help": "Training wall budget."})
    target: float | None = field(default=None, metadata={"help": "Probe exact match to commit."})
    rank: int | None = field(default=None, metadata={"help": "LoRA rank of new modules."})
    lr: float | None = field(default=None, metadata={"help": "Peak learning rate."})
    max_steps: int | None = field(default=None, metadata={"help": "Step budget per module."})
    mixture: str | None = field(default=None, metadata={"help": "e.g. 'qa+original', 'all'."})
    writer: Any = field(
        default=None,
        metadata={"help": "'local', 'none', a DataWriter or a LangChain BaseChatModel."},
    )
    drift_max: float | None = field(default=None, metadata={"help": "Relative ppl rise allowed."})
    seed: int = field(default=0, metadata={"help": "Seed for batching and LoRA init."})

    def __post_init__(self) -> None:
        if self.min_records < 1:
            raise InvalidInputError(f"min_records must be >= 1, got {self.min_records}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InvalidInputError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.target is not None and not 0.0 < self.target <= 1.0:
            raise InvalidInputError(f"target must be in (0, 1], got {self.target}")
        if self.rank is not None and self.rank < 1:
            raise InvalidInputError(f"rank must be >= 1, got {self.rank}")
        if self.lr is not None and self.lr <= 0:
            raise InvalidInputError(f"lr must be > 0, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidInputError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.drift_max is not None and self.drift_max <= 0:
            raise InvalidInputError(f"drift_max must be > 0, got {self.drift_max}")
        if self.mixture is not None:
            try:
                parse_mixture_names(self.mixture)
            except ValueError as e:
                raise InvalidInputError(str(e)) from e


@dataclass
class _Settings:
    """Options resolved against the store config."""

    target: float
    lr: float
    max_steps: int
    mixture: str
    drift_max: float
    capacity: Capacity
    deadline: float | None


def consolidate_namespace(
    svc: Services, namespace: str, options: ConsolidationOptions, *, progress: bool = False
) -> ConsolidationReport:
    with consolidation_lock(svc, namespace):
        return _run(svc, namespace, options, progress)


def run_locked(
    svc: Services, namespace: str, options: ConsolidationOptions, *, progress: bool = False
) -> ConsolidationReport:
    """A consolidation run for a caller that already holds :func:`consolidation_lock`."""
    return _run(svc, namespace, options, progress)


def resolve_capacity(svc: Services, rank: int | None = None) -> Capacity:
    """The module shape for new modules: calibrated when the store was calibrated."""
    cc = svc.config.consolidation
    table = cc.capacity_table()
    rank = rank or cc.rank or None
    if table:
        return choose_capacity(table, rank, cc.capacity_margin, calibrated=True)
    return choose_capacity(
        BUILTIN_CAPACITY, rank or BUILTIN_RANK, cc.capacity_margin, calibrated=False
    )


def _run(
    svc: Services, namespace: str, opts: ConsolidationOptions, progress: bool
) -> ConsolidationReport:
    t0 = time.perf_counter()
    cc = svc.config.consolidation
    notes: list[str] = []
    stale = registry.remove_stale_temp(svc.path, namespace, older_than=0)  # we hold the lock
    if stale:
        notes.append(f"removed {stale} temp dir(s) of an interrupted run")
    stale_modules, reset = drop_modules_missing_records(svc, namespace)
    if stale_modules:
        notes.append(
            f"set aside {len(stale_modules)} module(s) listing records the buffer no longer has "
            f"(quarantined, or deleted for a forget that was interrupted); {reset} of their "
            "records are retrained"
        )
    finished = finish_marking(svc, namespace)
    if finished:
        notes.append(f"finished marking {finished} record(s) of an interrupted run")
    buffered = svc.buffer.get(namespace, where={"status": STATUS_BUFFERED})
    if len(buffered) < opts.min_records:
        return ConsolidationReport(
            namespace,
            "nothing_to_do",
            records_in=len(buffered),
            seconds=_since(t0),
            notes=(*notes, f"{len(buffered)} buffered record(s) < min_records={opts.min_records}"),
        )
    failpoint("selected")
    mixture = opts.mixture if opts.mixture is not None else cc.mixture
    settings = _Settings(
        target=opts.target if opts.target is not None else cc.target,
        lr=opts.lr if opts.lr is not None else cc.lr_for(mixture),
        max_steps=opts.max_steps if opts.max_steps is not None else cc.max_steps,
        mixture=mixture,
        drift_max=opts.drift_max if opts.drift_max is not None else cc.drift_max,
        capacity=resolve_capacity(svc, opts.rank),
        deadline=None if opts.max_minutes is None else t0 + opts.max_minutes * 60,
    )
    if not settings.capacity.calibrated:
        notes.append(
            f"capacity not calibrated for this store: using {settings.capacity.tokens} tokens "
            f"a module at r={settings.capacity.rank} (run `lora-memory calibrate`)"
        )
    gen = svc.generator()
    count_tokens = functools.lru_cache(maxsize=None)(gen.count_tokens)  # split, then planning
    buffered, oversized = split_oversized(buffered, count_tokens, gen.context_window)
    if oversized:
        notes.append(
            f"{len(oversized)} record(s) longer than {gen.context_window // RECORD_SHARE} "
            f"tokens stay buffered, searchable but not trained: {', '.join(oversized[:5])}"
            f"{' ...' if len(oversized) > 5 else ''} (add long text with add_document, which "
            "chunks it)"
        )
        if not buffered:
            return ConsolidationReport(
                namespace, "nothing_to_do", records_in=0, seconds=_since(t0), notes=tuple(notes)
            )
    existing = registry.list_modules(svc.path, namespace)
    fingerprint = gen.fingerprint  # another base model's modules are never retrained
    extend = open_module_for(existing, settings.capacity, base_fingerprint=fingerprint)
    old_ids = list(extend.record_ids) if extend is not None else []
    old = {r.id: r for r in svc.buffer.get(namespace, ids=old_ids)} if old_ids else {}
    plans = plan_modules(
        existing, old, buffered, count_tokens, settings.capacity, base_fingerprint=fingerprint
    )
    writer = _resolve_writer(svc, opts.writer, settings.mixture)

    outcomes: list[_Outcome] = []
    for i, plan in enumerate(plans):
        if settings.deadline is not None and time.perf_counter() > settings.deadline:
            notes.append(
                f"time budget spent: {len(plans) - i} planned module(s) left for the next run"
            )
            break
        if progress and len(plans) > 1:
            logger.info("module %d/%d: %d records", i + 1, len(plans), len(plan.records))
        outcome = _build_module(
            svc, namespace, plan, settings, writer=writer, seed=opts.seed, progress=progress
        )
        outcomes.append(outcome)
        notes.extend(plan.notes)
        notes.extend(outcome.notes)
    _sync_routing(svc, namespace, notes)
    return _report(namespace, buffered, outcomes, notes, capacity=settings.capacity, t0=t0)


RECORD_SHARE = 4
"""A record may take at most 1/RECORD_SHARE of the model's context window to be trained: the
teacher and the with-context examples show it beside others, a question and an answer."""


def split_oversized(
    records: list[Record], count_tokens: Callable[[str], int], context_window: int
) -> tuple[list[Record], list[str]]:
    """(records that fit, ids of those too long to train). A turn can pass the character limit
    and still be ~100k tokens (32k emoji): trained, it would fail every run, or exhaust memory."""
    limit = context_window // RECORD_SHARE
    fit: list[Record] = []
    too_long: list[str] = []
    for r in records:
        if count_tokens(r.text) <= limit:
            fit.append(r)
        else:
            too_long.append(r.id)
    return fit, too_long


def _sync_routing(svc: Services, namespace: str, notes: list[str]) -> None:
    """Index the committed modules' keys now, so the first question after a run pays nothing.

    The index is derived from the registry: if this fails (or the process dies first), the next
    question or run re-syncs, so a failure here is a note, not a failed consolidation.
    """
    try:
        stats = svc.routing.sync(namespace)
    except BackendError as e:
        notes.append(f"routing index not updated ({e}); the next question or run retries")
        return
    if stats["added_keys"]:
        notes.append(
            f"routing index: {stats['added_keys']} keys for {stats['added_modules']} module(s)"
        )


@dataclass
class _Outcome:
    plan: PlannedModule
    committed: str | None = None
    result: TrainResult | None = None
    probe_recall: float | None = None
    drift: float | None = None
    synth: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _build_module(
    svc: Services,
    namespace: str,
    plan: PlannedModule,
    s: _Settings,
    *,
    writer: Any,
    seed: int,
    progress: bool,
) -> _Outcome:
    out = _Outcome(plan)
    gen = svc.generator()
    system = svc.config.generation.system_prompt
    names = parse_mixture_names(s.mixture)
    data: Any
    if DISTILL in names:
        data = distill_stage.distill(
            plan.records,
            gen,
            writer,
            system,
            seed=seed,
            original="original" in names,
            loss=svc.config.consolidation.distill_loss,
            retrieves=_retriever(svc, namespace),
        )
    else:
        data = synthesize(plan.records, writer, s.mixture, system)
    out.synth = data.stats
    if not data.examples:
        out.notes.append("no training examples could be made; records stay buffered")
        return out
    distilled = isinstance(data, DistillResult)
    # record id -> the text its answers' values are found in: one map for the in-training
    # evaluator and the gate, so both judge agreement the same way
    sources = {r.id: trainable_text(r) or r.text for r in plan.records}
    evaluate = held_out_evaluator(data.probes, sources, system) if distilled else None
    lr = s.lr
    result = None
    # one guard for both attempts: the base model it measures once is the same for the retry
    guard = drift_check.DriftGuard(gen.tokenizer, s.drift_max) if distilled else None
    for attempt in range(2):
        remaining = None if s.deadline is None else max(1.0, s.deadline - time.perf_counter())
        config = TrainConfig(
            rank=s.capacity.rank,
            alpha=s.capacity.alpha,
            lr=lr,
            max_steps=s.max_steps,
            seed=seed,
            max_seconds=remaining,
            device=svc.config.models.device,
            patience=DISTILL_PATIENCE if distilled else None,
            patience_below=DISTILL_PATIENCE_BELOW if distilled else None,
            pass_score=_pass_score(svc, s) if distilled else None,
            evaluate_from=DISTILL_EVALUATE_FROM if distilled else None,
            top_layers=(svc.config.consolidation.top_layers or None) if distilled else None,
        )
        before = len(guard.readings) if guard is not None else 0
        result = train_lora(
            gen.path, data.examples, config, progress=progress, evaluate=evaluate, guard=guard
        )
        failpoint("trained")
        if result.guarded:
            kept = (
                f"kept the best weights evaluated before it (held-out {result.held_out:.2f})"
                if result.held_out is not None
                else "no weights were evaluated before it"
            )
            out.notes.append(f"training stopped at step {result.steps}: {result.guarded}; {kept}")
        if guard is not None and result.kept_evaluation is not None:
            # the guard measured these very weights right before the evaluation that kept them
            out.drift = guard.readings[before + result.kept_evaluation - 1]
        else:
            out.drift = drift_check.measure_drift(result.model, gen.tokenizer)["drift"]
        if out.drift <= s.drift_max:
            break
        if attempt == 0:
            out.notes.append(
                f"drift {out.drift:+.1%} > {s.drift_max:.0%} at lr={lr:g}; retrying gentler "
                f"(lr={lr * GENTLER_LR_FACTOR:g})"
            )
            lr *= GENTLER_LR_FACTOR
            continue
        out.result = result
        out.notes.append(
            f"drift {out.drift:+.1%} > {s.drift_max:.0%} after the gentler retry; "
            f"{len(plan.new_ids)} record(s) stay buffered"
        )
        return out
    assert result is not None
    out.result = result
    module_id = registry.new_module_id()
    root = registry.modules_root(svc.path, namespace)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{registry.TMP_PREFIX}train-", dir=root) as tmp:
        adapter_dir = save_adapter(result, Path(tmp) / "adapter")
        failpoint("saved")
        if distilled:
            verdict = _gate(
                svc, namespace, gen, (module_id, adapter_dir), data, sources, s, result.held_out
            )
            gen.forget_adapter(module_id)  # reloaded from the committed dir on first use
            out.gate = verdict.to_dict()
            out.probe_recall = verdict.held_out if verdict.held_out is not None else verdict.qa
            if not verdict.passed:
                out.notes.append(
                    f"gate: {verdict.reason} after {result.steps} steps "
                    f"({result.stopped_because}); {len(plan.new_ids)} record(s) stay buffered"
                )
                return out
            if verdict.reads is False and verdict.reading is not None:
                read, base = verdict.reading
                out.notes.append(
                    f"the module reads {read} control notes right where the base model reads "
                    f"{base}: auto answers from it alone or from rag, never from both"
                )
        else:
            out.probe_recall = probe_exact_match(gen, (module_id, adapter_dir), data.probes, system)
            gen.forget_adapter(module_id)  # reloaded from the committed dir on first use
            if out.probe_recall is not None and out.probe_recall < s.target:
                out.notes.append(
                    f"probe exact match {out.probe_recall:.1%} < target {s.target:.0%} after "
                    f"{result.steps} steps ({result.stopped_because}); "
                    f"{len(plan.new_ids)} record(s) stay buffered"
                )
                return out
        manifest = registry.ModuleManifest(
            module_id=module_id,
            namespace=namespace,
            record_ids=tuple(r.id for r in plan.records),
            base_model=result.base_model,
            base_fingerprint=gen.fingerprint,
            rank=config.rank,
            alpha=int(result.lora_config.lora_alpha),
            target_modules=_targets(result.lora_config),
            knowledge_tokens=plan.tokens,
            capacity_tokens=s.capacity.tokens,
            probes=tuple(p.to_dict() for p in data.probes),
            metrics={
                "recall": result.recall,
                "probe_recall": out.probe_recall,
                "drift": out.drift,
                "lr": lr,
                "steps": result.steps,
                "seconds": result.seconds,
                "train_tokens": result.train_tokens,
                "tokens_per_second": result.tokens_per_second,
                "examples": len(data.examples),
                "mixture": s.mixture,
                "synthetic": data.stats,
                "stopped_because": result.stopped_because,
                **out.gate,
            },
        )
        registry.commit_module(svc.path, namespace, adapter_dir, manifest)  # the commit
    failpoint("committed")
    mark(svc, namespace, plan.new_ids, module_id)
    failpoint("marking")
    if plan.extends is not None:  # its records (those still stored) now live in the new one
        fresh = set(plan.new_ids)
        mark(svc, namespace, [r.id for r in plan.records if r.id not in fresh], module_id)
        failpoint("marked")
        registry.remove_module(svc.path, namespace, plan.extends.module_id)
        gen.forget_adapter(plan.extends.module_id)
    out.committed = module_id
    return out


def _retriever(svc: Services, namespace: str) -> distill_stage.Retriever:
    """The ids of the records ``rag`` puts in context for a question (its k and score floor)."""
    gcfg = svc.config.generation

    def retrieves(question: str) -> set[str]:
        hits = svc.buffer.search(namespace, question, gcfg.rag_k)
        return {h.id for h in hits if h.score >= gcfg.rag_min_score}

    return retrieves


def _pass_score(svc: Services, s: _Settings) -> float:
    """The held-out agreement the gate will require (``held_out_target``, else ``target``)."""
    need = svc.config.consolidation.held_out_target
    return s.target if need is None else need


def _gate(  # noqa: PLR0917
    svc: Services,
    namespace: str,
    gen: Any,
    adapter: tuple[str, Path],
    data: Any,
    sources: dict[str, str],
    s: _Settings,
    held_out_score: float | None,
) -> Any:
    """:func:`.gate.gate` with this namespace's rag retrieval."""
    gcfg = svc.config.generation

    def search(question: str) -> list[Any]:  # what rag would read: same k, floor and budget
        hits = svc.buffer.search(namespace, question, gcfg.rag_k)
        hits = [h for h in hits if h.score >= gcfg.rag_min_score]
        return fit_context(hits, gcfg.context_budget, gen.count_tokens)[0]

    text_only = not data.held_in and bool(data.examples)
    held_out_target = svc.config.consolidation.held_out_target
    return gate(
        gen,
        adapter,
        data.probes,
        sources,
        gcfg.system_prompt,
        target=s.target,
        held_out_target=held_out_target,
        search=search,
        text_only=text_only,
        held_out_score=held_out_score,
    )


def _report(
    namespace: str,
    buffered: list[Any],
    outcomes: list[_Outcome],
    notes: list[str],
    *,
    capacity: Capacity,
    t0: float,
) -> ConsolidationReport:
    trained = [o for o in outcomes if o.result is not None]
    committed = [o for o in outcomes if o.committed]
    seconds = sum(o.result.seconds for o in trained if o.result is not None)
    tokens = sum(o.result.train_tokens for o in trained if o.result is not None)
    probes = [o.probe_recall for o in committed if o.probe_recall is not None]
    drifts = [o.drift for o in trained if o.drift is not None]
    recalls = [o.result.recall for o in committed if o.result and o.result.recall is not None]
    status: ConsolidationStatus
    if not outcomes:
        status = "kept_buffered"
    elif len(committed) == len(outcomes) and len(outcomes) > 0:
        status = "consolidated"
    elif committed:
        status = "partial"
    else:
        status = "kept_buffered"
    consolidated = sum(len(o.plan.new_ids) for o in committed)
    return ConsolidationReport(
        namespace,
        status,
        records_in=len(buffered),
        records_consolidated=consolidated,
        modules_created=tuple(o.committed for o in committed if o.committed),
        modules_replaced=tuple(
            o.plan.extends.module_id for o in committed if o.plan.extends is not None
        ),
        train_tokens=tokens,
        steps=sum(o.result.steps for o in trained if o.result is not None),
        seconds=_since(t0),
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        recall=min(recalls) if recalls else None,
        probe_recall=min(probes) if probes else None,
        drift=max(drifts) if drifts else None,
        capacity={
            "rank": capacity.rank,
            "alpha": capacity.alpha,
            "tokens": capacity.tokens,
            "budget": capacity.budget,
            "calibrated": capacity.calibrated,
        },
        modules=tuple(_module_summary(o) for o in outcomes),
        notes=tuple(notes),
    )


def _module_summary(o: _Outcome) -> dict[str, Any]:
    r = o.result
    return {
        "module_id": o.committed,
        "extends": o.plan.extends.module_id if o.plan.extends is not None else None,
        "records": len(o.plan.records),
        "new_records": len(o.plan.new_ids),
        "knowledge_tokens": o.plan.tokens,
        "steps": r.steps if r else 0,
        "seconds": r.seconds if r else 0.0,
        "train_tokens": r.train_tokens if r else 0,
        "recall": r.recall if r else None,
        "probe_recall": o.probe_recall,
        "drift": o.drift,
        "synthetic": o.synth,
        **o.gate,
        "committed": o.committed is not None,
    }


def _resolve_writer(svc: Services, writer: Any, mixture: str) -> Any:
    """``None``/'local'/'none'/a DataWriter/a LangChain chat model -> a DataWriter or None."""
    names = parse_mixture_names(mixture)
    if writer is None:
        writer = svc.config.consolidation.writer
    if writer == "none" or names == ("original",):
        return None
    if writer == "local":
        return LocalWriter(svc.generator())
    if hasattr(writer, "write") and hasattr(writer, "name"):
        return writer
    if hasattr(writer, "invoke") and hasattr(writer, "batch"):
        return LangChainWriter(writer)
    raise InvalidInputError(
        "writer must be 'local', 'none', a DataWriter or a LangChain BaseChatModel; "
        f"got {type(writer).__name__}"
    )


def finish_marking(svc: Services, namespace: str) -> int:
    """Mark records a committed module holds but the buffer does not show as its own.

    After a crash between the commit and the end of marking, a module's records may still be
    buffered, or still point at the module the new one replaced (and which may still exist).
    Each record belongs to the newest module that lists it; older modules whose records all
    moved to a newer one are removed.
    """
    modules = registry.list_modules(svc.path, namespace)
    if not modules:
        return 0
    owner: dict[str, str] = {}
    for m in modules:  # oldest first: the newest module listing a record wins
        for rid in m.record_ids:
            owner[rid] = m.module_id
    records = {r.id: r for r in svc.buffer.get_existing(namespace, list(owner))}
    pending: dict[str, list[str]] = {}
    for rid, module_id in owner.items():
        rec = records.get(rid)
        if rec is None:
            continue  # forgotten since; the module is rebuilt by forget
        md = rec.metadata
        if md.get("status") != STATUS_CONSOLIDATED or md.get("module_id") != module_id:
            pending.setdefault(module_id, []).append(rid)
    done = 0
    for module_id, ids in pending.items():
        mark(svc, namespace, ids, module_id)
        done += len(ids)
    live = set(owner.values())
    for m in modules:
        if m.module_id not in live:  # superseded: every record moved to a newer module
            registry.remove_module(svc.path, namespace, m.module_id)
    return done


def mark(svc: Services, namespace: str, ids: list[str], module_id: str) -> None:
    if ids:
        svc.buffer.update_metadata(
            namespace, ids, {"status": STATUS_CONSOLIDATED, "module_id": module_id}
        )


def _targets(lora_config: Any) -> tuple[str, ...] | str:
    t = lora_config.target_modules
    return t if isinstance(t, str) else tuple(sorted(t))


def _since(t0: float) -> float:
    return time.perf_counter() - t0


__all__ = [
    "ConsolidationOptions",
    "consolidate_namespace",
    "finish_marking",
    "mark",
    "probe_exact_match",
    "resolve_capacity",
]
