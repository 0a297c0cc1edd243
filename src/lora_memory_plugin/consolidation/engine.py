"""``consolidate``: buffered records -> a verified LoRA module, as a crash-safe transaction.

One run for one namespace, under that namespace's lock (``LockHeldError`` -> CLI exit 3):

1. finish any interrupted marking: records listed by a committed module but still buffered;
2. select the buffered records (records added during the run stay buffered for the next one);
3. build training examples (:mod:`.data`) with the same system prompt and chat template that
   ``ask`` uses;
4. train one module on the namespace's records, old and new: the previous module is retrained
   into the new one (the paper's rule: extend a module while it has room);
5. gate: greedy generation on the module's probes must reach ``target`` exact match;
6. commit the module directory by atomic rename, then mark the records, then remove the module it
   replaced. A crash before the rename leaves the records buffered; after it, the next run
   finishes the marking from the manifest.

Not here yet (see the consolidation issue): generated synthetic data (facts, QA, summaries),
capacity calibration and module packing, the base-model drift check.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._failpoints import failpoint
from .._filelock import file_lock
from .._fsutil import remove_path
from ..errors import InvalidInputError
from ..registry import modules as registry
from ..store.namespaces import encode_namespace
from ..store.records import STATUS_BUFFERED, STATUS_CONSOLIDATED
from ..types import ConsolidationReport
from .data import Probe, build_examples

if TYPE_CHECKING:
    from ..memory import LoRAMemory

logger = logging.getLogger(__name__)


@dataclass
class ConsolidationOptions:
    """Per-run knobs (the store config gives the defaults)."""

    min_records: int = field(default=1, metadata={"help": "Do nothing below this many."})
    max_minutes: float | None = field(default=None, metadata={"help": "Training wall budget."})
    target: float = field(default=1.0, metadata={"help": "Probe exact match the gate needs."})
    rank: int = field(default=16, metadata={"help": "LoRA rank (until calibrate sets it)."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    max_steps: int = field(default=2000, metadata={"help": "Training step budget."})
    seed: int = field(default=0, metadata={"help": "Seed for batching and LoRA init."})

    def __post_init__(self) -> None:
        if self.min_records < 1:
            raise InvalidInputError(f"min_records must be >= 1, got {self.min_records}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InvalidInputError(f"max_minutes must be > 0, got {self.max_minutes}")
        if not 0.0 < self.target <= 1.0:
            raise InvalidInputError(f"target must be in (0, 1], got {self.target}")


def consolidate_namespace(
    mem: LoRAMemory, namespace: str, options: ConsolidationOptions, *, progress: bool = False
) -> ConsolidationReport:
    lock = mem.path / "locks" / f"consolidate-{encode_namespace(namespace)}.lock"
    with file_lock(lock, blocking=False, what=f"consolidation of {namespace!r}"):
        return _run(mem, namespace, options, progress)


def _run(
    mem: LoRAMemory, namespace: str, opts: ConsolidationOptions, progress: bool
) -> ConsolidationReport:
    t0 = time.perf_counter()
    notes: list[str] = []
    finished = finish_marking(mem, namespace)
    if finished:
        notes.append(f"finished marking {finished} record(s) of an interrupted run")
    buffered = mem.get(namespace, status=STATUS_BUFFERED)
    if len(buffered) < opts.min_records:
        return ConsolidationReport(
            namespace,
            "nothing_to_do",
            records_in=len(buffered),
            seconds=_since(t0),
            notes=(*notes, f"{len(buffered)} buffered record(s) < min_records={opts.min_records}"),
        )
    previous = registry.list_modules(mem.path, namespace)
    old_ids = [rid for m in previous for rid in m.record_ids]
    old = mem.get(namespace, ids=old_ids) if old_ids else []
    records = old + buffered
    failpoint("selected")
    system = mem.config.generation.system_prompt
    examples, probes = build_examples(records, system)

    from .trainer import TrainConfig, save_adapter, train_lora

    gen = mem.generator()
    config = TrainConfig(
        rank=opts.rank,
        lr=opts.lr,
        max_steps=opts.max_steps,
        seed=opts.seed,
        max_seconds=None if opts.max_minutes is None else opts.max_minutes * 60,
        device=mem.config.models.device,
    )
    result = train_lora(gen.path, examples, config, progress=progress)
    failpoint("trained")
    module_id = registry.new_module_id()
    with tempfile.TemporaryDirectory(prefix=".train-", dir=mem.path) as tmp:
        adapter_dir = save_adapter(result, Path(tmp) / "adapter")
        failpoint("saved")
        probe_recall = probe_exact_match(gen, (module_id, adapter_dir), probes, system)
        gen.forget_adapter(module_id)  # reloaded from the committed dir on first use
        report = ConsolidationReport(
            namespace,
            "consolidated",
            records_in=len(buffered),
            train_tokens=result.train_tokens,
            steps=result.steps,
            seconds=_since(t0),
            tokens_per_second=result.tokens_per_second,
            recall=result.recall,
            probe_recall=probe_recall,
        )
        if probes and probe_recall is not None and probe_recall < opts.target:
            return _replace(
                report,
                status="kept_buffered",
                notes=(
                    *notes,
                    f"probe exact match {probe_recall:.1%} < target {opts.target:.0%} after "
                    f"{result.steps} steps ({result.stopped_because}); records stay buffered",
                ),
            )
        manifest = registry.ModuleManifest(
            module_id=module_id,
            namespace=namespace,
            record_ids=tuple(r.id for r in records),
            base_model=result.base_model,
            base_fingerprint=base_fingerprint(gen),
            rank=config.rank,
            alpha=int(result.lora_config.lora_alpha),
            target_modules=_targets(result.lora_config),
            knowledge_tokens=sum(gen.count_tokens(r.text) for r in records),
            probes=tuple(p.to_dict() for p in probes),
            metrics={
                "recall": result.recall,
                "probe_recall": probe_recall,
                "steps": result.steps,
                "seconds": result.seconds,
                "train_tokens": result.train_tokens,
                "stopped_because": result.stopped_because,
            },
        )
        registry.commit_module(mem.path, namespace, adapter_dir, manifest)  # the commit
    failpoint("committed")
    mark(mem, namespace, [r.id for r in buffered], module_id)
    failpoint("marking")
    failpoint("marked")
    for m in previous:  # their records now live in the new module
        mark(mem, namespace, list(m.record_ids), module_id)
        remove_path(registry.modules_root(mem.path, namespace) / m.module_id)
        gen.forget_adapter(m.module_id)
    return _replace(
        report,
        modules_created=(module_id,),
        modules_replaced=tuple(m.module_id for m in previous),
        seconds=_since(t0),
        notes=tuple(notes),
    )


def finish_marking(mem: LoRAMemory, namespace: str) -> int:
    """Mark records a committed module holds but the buffer still lists as buffered."""
    done = 0
    modules = registry.list_modules(mem.path, namespace)
    if not modules:
        return 0
    buffered = {r.id for r in mem.get(namespace, status=STATUS_BUFFERED)}
    latest = modules[-1]
    for m in modules:
        pending = [rid for rid in m.record_ids if rid in buffered]
        if pending:
            mark(mem, namespace, pending, latest.module_id)
            done += len(pending)
    return done


def mark(mem: LoRAMemory, namespace: str, ids: list[str], module_id: str) -> None:
    mem.buffer.update_metadata(
        namespace, ids, {"status": STATUS_CONSOLIDATED, "module_id": module_id}
    )


def probe_exact_match(
    gen: Any, adapter: tuple[str, Path], probes: list[Probe], system: str
) -> float | None:
    """Share of probes whose greedy answer (with the adapter) contains the expected answer."""
    if not probes:
        return None
    hits = 0
    for p in probes:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": p.question}]
        budget = gen.count_tokens(p.answer) + 8
        out = gen.chat(messages, max_new_tokens=budget, adapter=adapter)
        hits += p.answer.strip().lower() in out.text.strip().lower()
    return hits / len(probes)


def base_fingerprint(gen: Any) -> str:
    """The base weights' identity: our marker's sha256 for pulled models, else a hash of them."""
    cached: str | None = getattr(gen, "_lm_fingerprint", None)
    if cached is not None:  # hashing a large base model once per process is enough
        return cached
    from ..models.pull import fingerprint_model_dir

    path = Path(gen.path)
    if path.is_dir():
        fp = fingerprint_model_dir(path)
    else:
        import hashlib

        fp = hashlib.sha256(f"hub:{gen.path}".encode()).hexdigest()
    gen._lm_fingerprint = fp
    return fp


def _targets(lora_config: Any) -> tuple[str, ...] | str:
    t = lora_config.target_modules
    return t if isinstance(t, str) else tuple(sorted(t))


def _replace(report: ConsolidationReport, **changes: Any) -> ConsolidationReport:
    from dataclasses import replace

    return replace(report, **changes)


def _since(t0: float) -> float:
    return time.perf_counter() - t0
