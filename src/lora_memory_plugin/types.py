"""The public API's small frozen result types and the typed keyword options of its methods."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict, get_args

# re-exported for the typed ``**options`` of LoRAMemory and RemoteMemory
if sys.version_info >= (3, 11):
    from typing import Unpack as Unpack  # noqa: PLC0414 (an explicit re-export, for mypy)
else:  # pragma: no cover
    from typing_extensions import Unpack as Unpack  # noqa: PLC0414

Metadata = dict[str, Any]

Mode = Literal["auto", "hybrid", "lora", "rag", "icl", "base"]
"""How ``ask`` answers: ``auto`` picks lora, hybrid or rag per question; ``hybrid`` is the routed
module plus retrieved notes; ``lora`` the module alone; ``rag`` the base model with retrieved
notes; ``icl`` the whole namespace in context; ``base`` the model alone."""
MODES: tuple[Mode, ...] = get_args(Mode)

ConsolidationStatus = Literal[
    "consolidated", "partial", "kept_buffered", "nothing_to_do", "locked", "failed"
]
"""``ConsolidationReport.status`` (see there)."""


class OpenOptions(TypedDict, total=False):
    """``LoRAMemory.open``'s keywords.

    ``create``: create a missing store (default True); False raises StoreError instead.
    ``base_model``: for a new store, 'default', a Hugging Face id or a local path.
    ``embedder``: for a new store, 'default' or a local sentence-encoder dir.
    ``chroma_database``: for a new store on a Chroma server, the database to use (created if
    missing); unrelated stores sharing one server must use distinct databases.
    For an existing store, a model or database other than the saved one is ignored (a warning
    names the config file to edit).
    """

    create: bool
    base_model: str | None
    embedder: str | None
    chroma_database: str | None


class TurnFields(TypedDict, total=False):
    """The optional fields of a turn (``add_turn``'s keywords, ``add_turns``' mapping keys).

    ``role``: who spoke ('user', the default; 'assistant', 'system', 'tool'); only user turns
    are trained as facts. ``session_id``: groups turns. ``metadata``: user keys (flat
    str/int/float/bool values). ``created_at``: epoch seconds (default: now); the later of two
    conflicting turns wins.
    """

    role: str
    session_id: str | None
    metadata: Mapping[str, Any] | None
    created_at: float | None


class DocumentFields(TypedDict, total=False):
    """``add_document``'s optional keywords: ``source`` (a label such as a file name) and the
    ``session_id``, ``metadata`` and ``created_at`` of :class:`TurnFields`."""

    source: str | None
    session_id: str | None
    metadata: Mapping[str, Any] | None
    created_at: float | None


class RecordFilters(TypedDict, total=False):
    """Filters of ``get`` and ``count``: ``kind`` ('turn' / 'document'), ``session_id``,
    ``status`` ('buffered' / 'consolidated') and a raw Chroma ``where``, combined with AND."""

    kind: str | None
    session_id: str | None
    status: str | None
    where: dict[str, Any] | None


class GetOptions(RecordFilters, total=False):
    """``get``'s filters plus paging: ``limit`` (>= 1) and ``offset`` (>= 0)."""

    limit: int | None
    offset: int | None


class SearchFilters(RecordFilters, total=False):
    """``search``'s filters: those of :class:`RecordFilters` plus ``role`` and ``since`` /
    ``until`` (datetime or epoch seconds)."""

    role: str | None
    since: float | dt.datetime | None
    until: float | dt.datetime | None


class AnswerOptions(TypedDict, total=False):
    """Answering options: ``k`` (buffer hits in context; default the store's ``rag_k``) and
    ``max_new_tokens`` (default the store's ``[generation]`` setting)."""

    k: int | None
    max_new_tokens: int | None


class ConsolidateOptions(TypedDict, total=False):
    """``consolidate``'s options (each None or missing: the store's ``[consolidation]``
    setting): ``min_records`` (do nothing below it; 1), ``max_minutes`` (training wall budget),
    ``target`` (probe agreement to commit, 0-1), ``rank``, ``lr``, ``max_steps`` (per module),
    ``mixture`` ('distill', 'qa+original', ...), ``writer`` ('local', 'none', a DataWriter or a
    LangChain chat model), ``drift_max`` (relative perplexity rise allowed), ``seed``."""

    min_records: int
    max_minutes: float | None
    target: float | None
    rank: int | None
    lr: float | None
    max_steps: int | None
    mixture: str | None
    writer: Any
    drift_max: float | None
    seed: int


class ForgetOptions(ConsolidateOptions, total=False):
    """``forget``'s options: ``where`` (a filter, instead of ids), ``missing`` (forget what the
    modules hold that the buffer lost), ``rebuild`` (retrain the removed modules' other records;
    True), ``progress``, and the :class:`ConsolidateOptions` of that retraining."""

    where: dict[str, Any] | None
    missing: bool
    rebuild: bool
    progress: bool


class ChatOptions(TypedDict, total=False):
    """``chat``'s options: ``mode`` ('lora', the default, or 'base') and ``max_new_tokens``."""

    mode: str
    max_new_tokens: int | None


@dataclass(frozen=True)
class Generation:
    """One greedy generation of the base model (``Generator.chat``): the text, the prompt's
    and the answer's tokens, and the seconds it took."""

    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float


@dataclass(frozen=True)
class Hit:
    """One buffer search result.

    Attributes:
        id: record id (stable: derived from the namespace's content hash).
        text: the record's text.
        score: cosine similarity in [-1, 1]; higher is closer.
        metadata: the record metadata (kind, role, session_id, source, created_at, ...).
    """

    id: str
    text: str
    score: float
    metadata: Metadata = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Record:
    """A stored record as returned by :meth:`LoRAMemory.get`."""

    id: str
    text: str
    metadata: Metadata = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """The answer to :meth:`LoRAMemory.ask`.

    Attributes:
        text: the generated answer.
        mode: the mode that actually answered (may differ from the requested one, see notes).
        modules: ids of the LoRA modules used (empty for base/rag/icl).
        sources: buffer hits placed in the context (rag/icl/hybrid).
        context_tokens: tokens of the whole prompt given to the model.
        timings: seconds per phase (``retrieve``, ``generate``, ``total``, ...).
        requested_mode: the mode the caller asked for.
        notes: human-readable remarks, e.g. why a mode fell back to another.
        new_tokens: tokens generated.
        confidence: the router's confidence in the module that answered (0 without one).
        route: the routing decision for lora/hybrid modes (candidates with scores,
            confidences and votes, the chosen module, the reason), as a dict; else None.
    """

    text: str
    mode: str
    modules: tuple[str, ...] = ()
    sources: tuple[Hit, ...] = ()
    context_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    requested_mode: str = ""
    notes: tuple[str, ...] = ()
    new_tokens: int = 0
    confidence: float = 0.0
    route: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recall:
    """What the parametric memory recalls for a query (:meth:`LoRAMemory.recall`).

    Attributes:
        text: the routed module's answer with no buffer text in the prompt ('' when no module
            matched the query).
        modules: the module(s) that answered.
        confidence: the router's confidence in them (0.0 when none answered).
        reason: why these modules (or why none).
    """

    text: str
    modules: tuple[str, ...] = ()
    confidence: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NamespaceStatus:
    """Counts for one namespace (``quarantined``: modules that failed their integrity check or
    listed records the buffer had lost, as ``{"module_id", "reason", "path"}``; kept on disk,
    never routed to; their records are retrained by the next run)."""

    namespace: str
    records: int
    buffered: int
    consolidated: int
    turns: int
    documents: int
    modules: int = 0
    quarantined: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoreStatus:
    """The answer to :meth:`LoRAMemory.status`."""

    path: str
    backend: str
    base_model: str
    embedder: str
    namespaces: tuple[NamespaceStatus, ...] = ()
    base_model_ready: bool = False

    @property
    def records(self) -> int:
        return sum(n.records for n in self.namespaces)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["records"] = self.records
        return d


@dataclass(frozen=True)
class ConsolidationReport:
    """The answer to :meth:`LoRAMemory.consolidate` for one namespace.

    Attributes:
        namespace: the namespace.
        status: 'consolidated' (every planned module committed), 'partial' (some were, the
            others' records stay buffered), 'kept_buffered' (none passed the gate),
            'nothing_to_do', 'locked' (another process holds the namespace; only with
            namespace=None), or 'failed' (its run raised; only with namespace=None, which goes
            on with the other namespaces: the notes hold the error's class and message).
        records_in: buffered records this run selected.
        records_consolidated: of those, how many a committed module now holds.
        modules_created: ids of the modules committed by this run.
        modules_replaced: ids of modules this run extended (retrained into a new one) and removed.
        train_tokens, steps, seconds, tokens_per_second: training cost (all modules).
        recall: lowest teacher-forced recall of a committed module after training.
        probe_recall: lowest greedy-generation exact match on a committed module's probes.
        drift: highest relative perplexity rise on the control text (0.1 = +10%).
        capacity: the module shape used: rank, alpha, tokens, budget, calibrated.
        modules: one summary per planned module (records, tokens, steps, recall, drift, ...).
        notes: why something was skipped or kept buffered.
    """

    namespace: str
    status: ConsolidationStatus
    records_in: int = 0
    records_consolidated: int = 0
    modules_created: tuple[str, ...] = ()
    modules_replaced: tuple[str, ...] = ()
    train_tokens: int = 0
    steps: int = 0
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    recall: float | None = None
    probe_recall: float | None = None
    drift: float | None = None
    capacity: dict[str, Any] = field(default_factory=dict)
    modules: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ForgetReport:
    """What :meth:`LoRAMemory.forget` did.

    Attributes:
        namespace: the namespace.
        deleted: records deleted from the buffer.
        missing: requested ids the namespace did not hold.
        modules_removed: modules that held a forgotten record (deleted: nothing answers from
            them any more). Modules listing records that went missing on their own are
            quarantined instead (see notes and :meth:`LoRAMemory.status`).
        records_reset: their remaining records, put back in the buffered state.
        rebuild: the consolidation that retrained those records (None with ``rebuild=False``).
        seconds: wall time.
        notes: remarks.
    """

    namespace: str
    deleted: int = 0
    missing: tuple[str, ...] = ()
    modules_removed: tuple[str, ...] = ()
    records_reset: int = 0
    rebuild: ConsolidationReport | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
