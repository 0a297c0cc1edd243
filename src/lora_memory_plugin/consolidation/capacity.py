"""Capacity planning: how much a module holds, and which records go into which module.

The paper's rule (arXiv 2603.01097, finding 1): at a fixed rank a LoRA module's recall holds,
then collapses once the knowledge exceeds its capacity. So a module is a bounded unit:

- ``lora-memory calibrate`` measures, for the configured base model, the knowledge tokens a
  module of rank r holds at >= 95% probe recall (a PhoneBook-style doubling sweep) and stores it
  in ``[consolidation] capacity_tokens`` of the store config;
- :func:`plan_modules` packs buffered records into modules that stay under that capacity (times
  ``capacity_margin``): it extends the newest non-full module (retrained on its old records plus
  the new ones) and starts a new module when it is full.

Until a store is calibrated, :data:`BUILTIN_CAPACITY` applies: what we measured for the default
model (SmolLM2-135M-Instruct, r=16: the PhoneBook 1K slice, 1,295 tokens, at 100% exact recall).
It is conservative for larger models, which hold more: calibrate them.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..datasets.phonebook import phonebook
from ..errors import InvalidInputError
from ..registry.modules import ModuleManifest
from ..types import Record
from .data import Probe
from .gate import probe_exact_match
from .trainer import Example, TrainConfig, save_adapter, train_lora

if TYPE_CHECKING:
    from ..ports import Services

logger = logging.getLogger(__name__)

#: rank -> knowledge tokens at >= 95% recall, measured on the default model (see module doc).
BUILTIN_CAPACITY: dict[int, int] = {16: 1300}
BUILTIN_RANK = 16


@dataclass(frozen=True)
class Capacity:
    """The module shape consolidation uses: rank, alpha and the knowledge tokens it may hold."""

    rank: int
    alpha: int
    tokens: int  # measured capacity at the gate's recall
    budget: int  # what the planner fills a module to: tokens * margin
    calibrated: bool


def choose_capacity(
    table: dict[int, int], rank: int | None, margin: float, *, calibrated: bool
) -> Capacity:
    """The capacity for ``rank`` (or the most token-efficient calibrated rank when None).

    Efficiency is tokens per LoRA parameter, which grows like ``tokens / rank`` for a fixed
    model: the paper finds it peaks at low rank, so without an explicit rank we pick the rank
    with the most tokens per unit of rank among those measured. A rank that was not measured
    is scaled linearly from the nearest measured one (capacity grows with rank, with diminishing
    returns, so linear scaling up is optimistic: the margin and the gate cover it).
    """
    if not table:
        raise InvalidInputError("no capacity measured: run `lora-memory calibrate`")
    if rank is None:
        rank = max(table, key=lambda r: (table[r] / r, -r))
    if rank < 1:
        raise InvalidInputError(f"rank must be >= 1, got {rank}")
    if rank in table:
        tokens = table[rank]
    else:
        nearest = min(table, key=lambda r: (abs(math.log(r / rank)), r))
        tokens = max(1, int(table[nearest] * rank / nearest))
        calibrated = False
    # A calibrated figure sits at the edge of the cliff, so it gets the margin. The built-in
    # figure is a size measured well inside capacity (early stop after 18 epochs at 100%).
    budget = max(1, int(tokens * margin)) if calibrated else tokens
    return Capacity(rank=rank, alpha=rank, tokens=tokens, budget=budget, calibrated=calibrated)


@dataclass
class PlannedModule:
    """One module a consolidation run will train (a new one, or an extension of ``extends``)."""

    records: list[Record]  # everything the module will hold: old records first, then new ones
    new_ids: list[str]  # the buffered records it consolidates
    tokens: int  # knowledge tokens of ``records``
    extends: ModuleManifest | None = None
    notes: list[str] = field(default_factory=list)


def plan_modules(
    existing: Sequence[ModuleManifest],
    old_records: dict[str, Record],
    buffered: Sequence[Record],
    count_tokens: Callable[[str], int],
    capacity: Capacity,
    *,
    base_fingerprint: str | None = None,
) -> list[PlannedModule]:
    """Pack ``buffered`` records (in order) into modules of at most ``capacity.budget`` tokens.

    The newest existing module with room is extended (retrained on its records plus new ones);
    when it is full, new modules are started. A record larger than a whole module gets a module
    of its own (with a note). Modules of another rank keep their own capacity from their
    manifest. With ``base_fingerprint``, a module of other base weights is never extended
    (another process on its base model uses it). Pure: no I/O besides ``count_tokens``.
    """
    plans: list[PlannedModule] = []
    current: PlannedModule | None = None
    open_module = open_module_for(existing, capacity, base_fingerprint=base_fingerprint)
    if open_module is not None:
        held = [old_records[rid] for rid in open_module.record_ids if rid in old_records]
        current = PlannedModule(
            records=held,
            new_ids=[],
            tokens=sum(count_tokens(r.text) for r in held),
            extends=open_module,
        )
    for rec in buffered:
        n = count_tokens(rec.text)
        if current is not None and current.tokens + n > capacity.budget:
            if current.new_ids:
                plans.append(current)
            current = None
        if current is None:
            current = PlannedModule(records=[], new_ids=[], tokens=0)
            if n > capacity.budget:
                current.notes.append(
                    f"record {rec.id} alone has {n} tokens > module budget {capacity.budget}"
                )
        current.records.append(rec)
        current.new_ids.append(rec.id)
        current.tokens += n
    if current is not None and current.new_ids:
        plans.append(current)
    return plans


def open_module_for(
    existing: Sequence[ModuleManifest], capacity: Capacity, *, base_fingerprint: str | None = None
) -> ModuleManifest | None:
    """The newest module that still has room at ``capacity`` (same rank), if any.

    With ``base_fingerprint``, modules trained on other base weights are left alone: retraining
    one on this base model would replace (delete) the module its own base model's process uses.
    """
    for m in reversed(existing):
        if m.rank != capacity.rank:
            continue
        if base_fingerprint is not None and m.base_fingerprint != base_fingerprint:
            continue
        room = capacity.budget - m.knowledge_tokens
        if room > 0:
            return m
        return None  # only the newest module of the current shape is ever extended
    return None


# ---- calibration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationPoint:
    rank: int
    facts: int
    tokens: int
    recall: float
    steps: int
    seconds: float
    stopped_because: str
    params: int = 0  # trainable LoRA parameters


@dataclass(frozen=True)
class CalibrationReport:
    """``lora-memory calibrate``'s result: capacity per rank and every measured point."""

    base_model: str
    target: float
    capacity_tokens: dict[int, int]
    points: tuple[CalibrationPoint, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["capacity_tokens"] = {str(k): v for k, v in self.capacity_tokens.items()}
        return d


def calibrate(
    svc: Services,
    ranks: Sequence[int] = (4, 16),
    *,
    start_facts: int = 24,
    max_facts: int = 384,
    target: float = 0.95,
    max_epochs: int = 40,
    max_minutes: float | None = None,
    seed: int = 0,
    save: bool = True,
    progress: bool = False,
    on_point: Callable[[CalibrationPoint], None] | None = None,
) -> CalibrationReport:
    """Measure module capacity per rank on PhoneBook-style facts and store it in the config.

    For each rank, train on ``start_facts`` facts, then double while exact recall (greedy
    generation on every fact, answers in the ``ask`` prompt format) stays >= ``target``, with
    the store's ``[consolidation] lr`` (the setting consolidation will train with). The
    capacity is the largest passing size in tokens; a rank where even the first size fails gets
    no entry. Each training run stops early at the target, or after ``max_epochs`` epochs.
    """
    if not ranks or any(not isinstance(r, int) or r < 1 for r in ranks):
        raise InvalidInputError(f"ranks must be positive ints, got {list(ranks)!r}")
    if start_facts < 1 or max_facts < start_facts:
        raise InvalidInputError("need 1 <= start_facts <= max_facts")
    if not 0.0 < target <= 1.0:
        raise InvalidInputError(f"target must be in (0, 1], got {target}")
    if max_epochs < 1 or (max_minutes is not None and max_minutes <= 0):
        raise InvalidInputError("max_epochs must be >= 1 and max_minutes > 0")
    t0 = time.perf_counter()
    deadline = None if max_minutes is None else t0 + max_minutes * 60
    gen = svc.generator()
    system = svc.config.generation.system_prompt
    points: list[CalibrationPoint] = []
    table: dict[int, int] = {}
    for rank in sorted(set(ranks)):
        n = start_facts
        while n <= max_facts:
            if deadline is not None and time.perf_counter() > deadline:
                break
            remaining = None if deadline is None else max(1.0, deadline - time.perf_counter())
            point = capacity_point(
                gen,
                rank,
                n,
                lr=svc.config.consolidation.lr_for("qa"),
                max_epochs=max_epochs,
                seed=seed,
                max_seconds=remaining,
                device=svc.config.models.device,
                system=system,
                progress=progress,
            )
            points.append(point)
            logger.info(
                "calibrate r=%d: %d facts (%d tokens) -> %.1f%%",
                rank,
                n,
                point.tokens,
                100 * point.recall,
            )
            if on_point is not None:
                on_point(point)
            if point.recall < target:
                break
            table[rank] = point.tokens
            n *= 2
    report = CalibrationReport(
        base_model=svc.config.models.base_model,
        target=target,
        capacity_tokens=table,
        points=tuple(points),
        seconds=time.perf_counter() - t0,
    )
    if save and table:
        svc.update_config(consolidation={"capacity_tokens": {str(k): v for k, v in table.items()}})
    return report


def capacity_point(
    gen: Any,
    rank: int,
    facts: int,
    *,
    lr: float,
    max_epochs: int,
    seed: int = 0,
    batch_size: int = 16,
    max_seconds: float | None = None,
    target_modules: str | tuple[str, ...] = "all-linear",
    device: str = "auto",
    system: str = "",
    progress: bool = False,
) -> CalibrationPoint:
    """Train ``facts`` PhoneBook facts (seed ``seed + facts``) into one rank-``rank`` LoRA, then
    measure exact recall by greedy generation on every fact: one point of a capacity curve."""

    pb = phonebook(facts, seed=seed + facts)
    examples = [Example.qa(f.question, f.answer, system=system or None) for f in pb]
    config = TrainConfig(
        rank=rank,
        lr=lr,
        max_steps=max(1, math.ceil(facts / batch_size)) * max_epochs,
        batch_size=batch_size,
        seed=seed,
        target_recall=1.0,
        max_seconds=max_seconds,
        target_modules=target_modules,
        device=device,
    )
    result = train_lora(gen.path, examples, config, progress=progress)
    probes = [Probe(f.question, f.answer, f"pb-{i}") for i, f in enumerate(pb)]
    recall = generated_recall(gen, result, probes, system, probe_exact_match)
    return CalibrationPoint(
        rank,
        facts,
        sum(gen.count_tokens(f.text) for f in pb),
        recall,
        result.steps,
        result.seconds,
        result.stopped_because,
        params=sum(t.numel() for t in result.adapter_state.values()),
    )


def generated_recall(
    gen: Any, result: Any, probes: Sequence[Any], system: str, probe: Any
) -> float:
    """``probe`` (e.g. ``gate.probe_exact_match``) on a trained, not yet committed adapter:
    saved to a temp dir, loaded under a throwaway name, forgotten again."""
    with tempfile.TemporaryDirectory(prefix="lm-calibrate-") as tmp:
        adapter = save_adapter(result, Path(tmp) / "adapter")
        name = f"calibrate-{Path(tmp).name}"
        try:
            value = probe(gen, (name, adapter), list(probes), system)
        finally:
            gen.forget_adapter(name)
    return float(value or 0.0)
