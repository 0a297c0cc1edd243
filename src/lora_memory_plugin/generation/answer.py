"""``ask`` / ``ask_many`` / ``recall``: route, pick the context for a mode, prompt the base model.

Every question is prepared the same way (:func:`_prepare`): the router picks the namespace's
module for lora/hybrid modes (or none: then rag answers and the notes say why), the mode picks the
context, and the prompt is built. ``ask`` generates one; ``ask_many`` generates a whole batch in
one ``generate`` pass with a module per row (peft mixed batch), whatever modules and namespaces
its questions were routed to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._lru import NAMESPACE_CACHE_SIZE, LRUDict
from .._validate import MAX_QUERY_CHARS, check_k
from ..errors import (
    BaseModelMismatchError,
    InvalidInputError,
    InvalidTypeError,
    ModuleIntegrityError,
    UnknownNamespaceError,
)
from ..registry import modules as registry
from ..store.records import check_text
from ..types import MODES, Answer, Hit, Recall
from .prompts import build_messages, fit_context

if TYPE_CHECKING:
    from ..ports import Services
    from ..routing import RouteDecision

logger = logging.getLogger(__name__)

MAX_BATCH_QUESTIONS = 4096
# process-wide caches, bounded: a long-lived process serves many tenants and modules
_VERIFIED: LRUDict[tuple[str, int, int, str], None] = LRUDict(4 * NAMESPACE_CACHE_SIZE)
_WARNED_BASE: LRUDict[tuple[str, str], None] = LRUDict(4 * NAMESPACE_CACHE_SIZE)  # (dir, base)
_PROMPT_RESERVE = 64  # chat-template wrapper tokens around system + user
_MESSAGE_RESERVE = 8  # chat-template tokens around each further message
MAX_CHAT_MESSAGES = 1024
MAX_CHAT_MESSAGE_CHARS = 32_768  # as buffer.max_turn_chars' default
_SPLIT_MIN_SHARE = 0.1  # competing modules with at least this confidence give context


@dataclass
class _Prepared:
    namespace: str
    question: str
    mode: str
    effective: str
    messages: list[dict[str, str]]
    adapter: tuple[str, Path] | None
    context: list[Hit]
    notes: list[str]
    timings: dict[str, float]
    confidence: float = 0.0
    route: RouteDecision | None = field(default=None, repr=False)


def _check_args(svc: Services, mode: str, max_new_tokens: int | None) -> int:
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if max_new_tokens is None:
        return svc.config.generation.max_new_tokens
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise InvalidTypeError(
            f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}"
        )
    if not 1 <= max_new_tokens <= 4096:
        raise InvalidInputError(f"max_new_tokens must be in [1, 4096], got {max_new_tokens}")
    return max_new_tokens


def _check_namespace(svc: Services, namespace: str) -> None:
    if not svc.buffer.has_namespace(namespace):
        raise UnknownNamespaceError(
            f"namespace {namespace!r} has no records in this store; write to it first or check "
            "the name (`lora-memory status`)"
        )


def answer(
    svc: Services,
    namespace: str,
    question: str,
    mode: str,
    *,
    k: int | None = None,
    max_new_tokens: int | None = None,
) -> Answer:
    max_new = _check_args(svc, mode, max_new_tokens)
    question = check_text(question, what="question", limit=MAX_QUERY_CHARS)
    _check_namespace(svc, namespace)
    t_start = time.perf_counter()
    gen = svc.generator()
    load = time.perf_counter() - t_start
    p = _prepare(svc, namespace, question, mode, k=k, max_new_tokens=max_new, gen=gen)
    p.timings["load"] = load
    g = gen.chat(p.messages, max_new_tokens=max_new, adapter=p.adapter)
    p.timings["generate"] = g.seconds
    p.timings["total"] = time.perf_counter() - t_start
    return _answer(p, g)


def answer_many(
    svc: Services,
    namespaces: Sequence[str],
    questions: Sequence[str],
    mode: str,
    *,
    k: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
) -> list[Answer]:
    """Answers to many questions (each in its own namespace), generated in mixed batches."""
    max_new = _check_args(svc, mode, max_new_tokens)
    if isinstance(questions, str) or not isinstance(questions, Sequence):
        raise InvalidTypeError("questions must be a list of str")
    if len(questions) > MAX_BATCH_QUESTIONS:
        raise InvalidInputError(
            f"{len(questions)} questions in one call; the limit is {MAX_BATCH_QUESTIONS}"
        )
    checked = [check_text(q, what="question", limit=MAX_QUERY_CHARS) for q in questions]
    for ns in dict.fromkeys(namespaces):
        _check_namespace(svc, ns)
    t_start = time.perf_counter()
    gen = svc.generator()
    prepared = [
        _prepare(svc, ns, q, mode, k=k, max_new_tokens=max_new, gen=gen)
        for ns, q in zip(namespaces, checked, strict=True)
    ]
    t_gen = time.perf_counter()
    gens = gen.chat_routed(
        [p.messages for p in prepared],
        [p.adapter for p in prepared],
        max_new_tokens=max_new,
        batch_size=batch_size,
    )
    total = time.perf_counter() - t_start
    out = []
    for p, g in zip(prepared, gens, strict=True):
        p.timings["generate"] = g.seconds
        p.timings["batch_generate"] = time.perf_counter() - t_gen
        p.timings["batch_total"] = total
        p.timings["total"] = p.timings.get("retrieve", 0.0) + g.seconds
        out.append(_answer(p, g))
    return out


def recall(
    svc: Services, namespace: str, query: str, *, max_new_tokens: int | None = None
) -> Recall:
    """What the namespace's modules recall for ``query``, with no buffer text in the prompt."""
    max_new = _check_args(svc, "lora", max_new_tokens)
    query = check_text(query, what="query", limit=MAX_QUERY_CHARS)
    _check_namespace(svc, namespace)
    gen = svc.generator()
    decision = route_question(svc, namespace, query, gen)
    adapter, why = _adapter_for(svc, namespace, decision, gen)
    if adapter is None:
        return Recall("", (), 0.0, reason=why)
    messages = build_messages(svc.config.generation.system_prompt, query, [])
    g = gen.chat(messages, max_new_tokens=max_new, adapter=adapter)
    return Recall(g.text, (adapter[0],), decision.confidence, reason=decision.reason)


CHAT_ROLES = ("system", "user", "assistant")


def chat(
    svc: Services,
    namespace: str,
    messages: Sequence[dict[str, str]],
    mode: str,
    *,
    max_new_tokens: int | None = None,
) -> Answer:
    """A free-form conversation answered by the base model with the module routed from its last
    user message (``lora``), or by the bare base model (``base``). No buffer text is added."""
    if mode not in ("lora", "base"):
        raise InvalidInputError(f"chat mode must be 'lora' or 'base', got {mode!r}")
    max_new = _check_args(svc, mode, max_new_tokens)
    if isinstance(messages, (str, dict)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidTypeError("messages must be a non-empty list of {'role', 'content'} dicts")
    if len(messages) > MAX_CHAT_MESSAGES:
        raise InvalidInputError(
            f"{len(messages)} messages in one chat; the limit is {MAX_CHAT_MESSAGES} "
            "(the model reads only the latest that fit its window)"
        )
    chat_msgs: list[dict[str, str]] = []
    for m in messages:
        role, content = (m.get("role"), m.get("content")) if isinstance(m, dict) else (None, None)
        if role not in CHAT_ROLES or not isinstance(content, str):
            raise InvalidInputError(
                f"each message needs role in {CHAT_ROLES} and str content; got {m!r:.120}"
            )
        if len(content) > MAX_CHAT_MESSAGE_CHARS:
            raise InvalidInputError(
                f"a {role} message is {len(content):,} characters; the limit is "
                f"{MAX_CHAT_MESSAGE_CHARS:,}"
            )
        chat_msgs.append({"role": role, "content": content})
    if chat_msgs[0]["role"] != "system":  # the prompt the modules were trained with
        chat_msgs.insert(0, {"role": "system", "content": svc.config.generation.system_prompt})
    question = next((m["content"] for m in reversed(chat_msgs) if m["role"] == "user"), "")
    t_start = time.perf_counter()
    gen = svc.generator()
    timings: dict[str, float] = {"load": time.perf_counter() - t_start}
    adapter: tuple[str, Path] | None = None
    decision: RouteDecision | None = None
    notes: list[str] = []
    chat_msgs, dropped = _fit_history(chat_msgs, gen, gen.context_window - max_new)
    if dropped:
        notes.append(f"chat: the {dropped} oldest message(s) left out to fit the model's window")
    if mode == "lora" and question.strip() and svc.buffer.has_namespace(namespace):
        t0 = time.perf_counter()
        decision = route_question(svc, namespace, question[:MAX_QUERY_CHARS], gen)
        adapter, why = _adapter_for(svc, namespace, decision, gen)
        timings["route"] = time.perf_counter() - t0
        if adapter is None:
            notes.append(f"no module answered: {why}; the base model did")
    elif mode == "lora":
        notes.append("no module answered: no user message or no such namespace; base model")
    g = gen.chat(chat_msgs, max_new_tokens=max_new, adapter=adapter)
    timings["generate"] = g.seconds
    timings["total"] = time.perf_counter() - t_start
    return Answer(
        text=g.text,
        mode="lora" if adapter else "base",
        modules=(adapter[0],) if adapter else (),
        context_tokens=g.prompt_tokens,
        timings=timings,
        requested_mode=mode,
        notes=tuple(notes),
        new_tokens=g.new_tokens,
        confidence=decision.confidence if decision is not None and adapter else 0.0,
        route=decision.to_dict() if decision is not None else None,
    )


def _fit_history(
    messages: list[dict[str, str]], gen: Any, room: int
) -> tuple[list[dict[str, str]], int]:
    """The system message and the latest messages whose tokens fit ``room`` (as chat wrappers
    trim a history: oldest first), and how many were left out. The latest message must fit."""
    system, rest = messages[0], messages[1:]
    left = room - gen.count_tokens(system["content"]) - _PROMPT_RESERVE
    kept: list[dict[str, str]] = []
    for m in reversed(rest):
        need = gen.count_tokens(m["content"]) + _MESSAGE_RESERVE
        if need > left:
            break
        kept.append(m)
        left -= need
    if rest and not kept:
        raise InvalidInputError(
            f"the latest {rest[-1]['role']} message does not fit the model's "
            f"{gen.context_window:,}-token window with the system prompt and max_new_tokens"
        )
    return [system, *reversed(kept)], len(rest) - len(kept)


def route_question(svc: Services, namespace: str, question: str, gen: Any = None) -> RouteDecision:
    """Rank the namespace's committed modules for ``question`` (the index synced first).

    With ``gen``, modules trained on other base weights than its own are left out (see
    :func:`foreign_modules`), as if they were missing."""
    from ..routing import route  # noqa: PLC0415 (chromadb on first use)

    live = live_modules(svc, namespace)
    svc.routing.sync(namespace, list(live.values()))
    usable = set(live)
    if gen is not None:
        usable -= set(foreign_modules(svc, namespace, gen))
    rc = svc.config.routing
    return route(
        svc.routing,
        namespace,
        question,
        usable,
        top_k=rc.top_k,
        min_score=rc.min_score,
        temperature=rc.temperature,
        split_below=rc.split_below,
    )


_LIVE: LRUDict[tuple[str, str], tuple[int, dict[str, Any]]] = LRUDict()


def live_modules(svc: Services, namespace: str) -> dict[str, Any]:
    """Committed manifests by id; re-read only when the namespace's module dir changed (a
    commit or a removal renames an entry there, which updates the directory's mtime)."""
    root = registry.modules_root(svc.path, namespace)
    try:
        stamp = root.stat().st_mtime_ns
    except OSError:
        return {}
    key = (str(root), namespace)
    cached = _LIVE.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    found = {m.module_id: m for m in registry.list_modules(svc.path, namespace)}
    _LIVE[key] = (stamp, found)
    return found


def foreign_modules(svc: Services, namespace: str, gen: Any) -> dict[str, Any]:
    """The committed modules trained on other base weights than ``gen``'s, by id.

    Not damage: another process on their base model uses them. They are skipped here (never
    routed to, quarantined or retrained), with a warning once per module naming both models.
    """
    live = live_modules(svc, namespace)
    if not live:
        return {}
    fp = gen.fingerprint
    foreign = {i: m for i, m in live.items() if m.base_fingerprint != fp}
    for m in foreign.values():
        key = (str(registry.modules_root(svc.path, namespace) / m.module_id), fp)
        if key not in _WARNED_BASE:
            _WARNED_BASE[key] = None
            msg = registry.base_mismatch_message(m, fp, svc.config.models.base_model)
            logger.warning("namespace %r: %s", namespace, msg)
    return foreign


def _prepare(
    svc: Services,
    namespace: str,
    question: str,
    mode: str,
    *,
    k: int | None,
    max_new_tokens: int,
    gen: Any,
) -> _Prepared:

    gcfg = svc.config.generation
    k = check_k(k) if k is not None else gcfg.rag_k
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    effective = mode
    adapter: tuple[str, Path] | None = None
    decision: RouteDecision | None = None
    split_modules: list[str] = []
    if mode in ("lora", "hybrid", "auto"):
        decision = route_question(svc, namespace, question, gen)
        adapter, why = _adapter_for(svc, namespace, decision, gen)
        timings["route"] = time.perf_counter() - t0
        if adapter is None:
            notes.append(f"mode {mode!r} answers from consolidated LoRA modules; {why}, so rag")
            effective = "rag"
        elif mode == "auto":
            effective, reason = choose_auto(svc, namespace, decision)
            notes.append(f"auto: {effective} ({reason})")
            if effective == "rag":
                adapter = None
        elif decision.split:
            split_modules = [
                c.module_id for c in decision.candidates[:3] if c.share >= _SPLIT_MIN_SHARE
            ]
            notes.append(f"routing split ({decision.reason}): their records join the context")
            effective = "hybrid"

    window = gen.context_window
    room = window - max_new_tokens - gen.count_tokens(gcfg.system_prompt) - _PROMPT_RESERVE
    asked = gen.count_tokens(question)
    if asked > room:
        raise InvalidInputError(
            f"the question is {asked:,} tokens; with the system prompt and max_new_tokens="
            f"{max_new_tokens} the model's {window:,}-token window leaves room for {max(room, 0):,}"
        )
    budget = min(gcfg.context_budget, room - asked)
    t1 = time.perf_counter()
    context: list[Hit] = []
    if split_modules and mode == "lora":  # only the competing modules' own records
        where = {"module_id": {"$in": split_modules}}
        found = svc.buffer.search(namespace, question, k, where)
        context, _ = fit_context(found, max(budget, 0), gen.count_tokens)
    elif effective in ("rag", "hybrid"):
        found = svc.buffer.search(namespace, question, k)
        hits = [h for h in found if h.score >= gcfg.rag_min_score]
        if len(hits) < len(found):
            notes.append(
                f"rag: {len(found) - len(hits)} of {len(found)} hits scored below "
                f"rag_min_score={gcfg.rag_min_score} and were left out"
            )
        context, _ = fit_context(hits, max(budget, 0), gen.count_tokens)
        if len(context) < len(hits):
            notes.append(f"rag: {len(context)} of {len(hits)} hits fit the {budget}-token budget")
    elif effective == "icl":
        records = svc.buffer.get(namespace)
        records.sort(key=lambda r: float(r.metadata.get("created_at", 0.0)), reverse=True)
        hits = [Hit(r.id, r.text, 1.0, r.metadata) for r in records]
        kept, _ = fit_context(hits, max(budget, 0), gen.count_tokens)
        context = list(reversed(kept))  # chronological order in the prompt
        if len(kept) < len(records):
            notes.append(
                f"icl: {len(kept)} of {len(records)} records fit the {budget}-token budget "
                "(most recent kept)"
            )
    timings["retrieve"] = time.perf_counter() - t1
    return _Prepared(
        namespace=namespace,
        question=question,
        mode=mode,
        effective=effective,
        messages=build_messages(gcfg.system_prompt, question, context),
        adapter=adapter,
        context=context,
        notes=notes,
        timings=timings,
        confidence=decision.confidence if decision is not None and adapter is not None else 0.0,
        route=decision,
    )


def choose_auto(svc: Services, namespace: str, decision: RouteDecision) -> tuple[str, str]:
    """Mode ``auto`` for a question routed to a module: ``(lora|hybrid|rag, why)``.

    From the routing confidence and what the module's gate measured on held-out questions:
    lora when the router is confident and the module agreed with the teacher at the target;
    hybrid when the module made the model's reading no worse than rag (on the held-out probes,
    and on the gate's control notes, ``reading_ok``); else rag. A module without those
    measurements (consolidated by an older version, or from original text only) is not
    trusted: rag.
    """
    manifest = live_modules(svc, namespace).get(decision.chosen[0])
    metrics = dict(getattr(manifest, "metrics", None) or {})
    agreement = metrics.get("agreement_held_out")
    if agreement is None:  # only QA-shaped records: their own pairs, recalled at the gate
        agreement = metrics.get("qa_recall")
    rag, hybrid = metrics.get("rag_agreement"), metrics.get("hybrid_agreement")
    target = svc.config.consolidation.target
    need = svc.config.generation.auto_lora_confidence
    conf = decision.confidence
    if (
        not decision.split
        and conf >= need
        and isinstance(agreement, (int, float))
        and agreement >= target
    ):
        return "lora", f"confidence {conf:.2f} >= {need:.2f}, held-out agreement {agreement:.0%}"
    if isinstance(rag, (int, float)) and isinstance(hybrid, (int, float)) and hybrid < rag:
        return "rag", f"the module's hybrid ({hybrid:.0%}) was worse than rag ({rag:.0%})"
    if metrics.get("reading_ok") is False:
        read, base = (metrics.get("reading") or ["?", "?"])[:2]
        return "rag", f"the module reads control notes worse than the base model ({read} vs {base})"
    if agreement is None:  # consolidated before the gate measured it, or original text only
        return "rag", "the module has no held-out measurements to trust it by"
    return "hybrid", (
        f"confidence {conf:.2f}"
        + (f" < {need:.2f}" if conf < need else "")
        + (f", held-out agreement {agreement:.0%}" if isinstance(agreement, (int, float)) else "")
    )


def _answer(p: _Prepared, g: Any) -> Answer:
    return Answer(
        text=g.text,
        mode=p.effective,
        modules=(p.adapter[0],) if p.adapter else (),
        sources=tuple(p.context),
        context_tokens=g.prompt_tokens,
        timings=p.timings,
        requested_mode=p.mode,
        notes=tuple(p.notes),
        new_tokens=g.new_tokens,
        confidence=p.confidence,
        route=p.route.to_dict() if p.route is not None else None,
    )


def _adapter_for(
    svc: Services, namespace: str, decision: RouteDecision, gen: Any
) -> tuple[tuple[str, Path] | None, str]:
    """The chosen module's adapter dir, verified against its manifest and the base model once
    per file version; (None, why) when nothing was routed or the module fails its check.

    A module of other base weights is skipped (kept as it is); one failing its check is
    quarantined."""
    if not decision.chosen:
        if decision.reason == "no consolidated modules":
            foreign = foreign_modules(svc, namespace, gen)
            if foreign:
                models = ", ".join(sorted({m.base_model for m in foreign.values()}))
                return None, (
                    f"module(s) {', '.join(foreign)} were trained on another base model "
                    f"({models}) and are skipped, not quarantined (open the store with that "
                    "base model to use them)"
                )
            return None, f"namespace {namespace!r} has none yet (run `lora-memory consolidate`)"
        return None, f"no module matched ({decision.reason})"
    module_id = decision.chosen[0]
    path = registry.modules_root(svc.path, namespace) / module_id
    weights = path / registry.ADAPTER_WEIGHTS
    try:
        st = weights.stat()
        fp = gen.fingerprint
        key = (str(path), st.st_mtime_ns, st.st_size, fp)
        if key not in _VERIFIED:  # hash the adapter once per file version, not per question
            registry.verify_module(path, fp)
            _VERIFIED[key] = None
    except OSError as e:
        return None, f"module {module_id} cannot be read ({e})"
    except BaseModelMismatchError as e:  # not damage: another base model's process uses it
        logger.warning("namespace %r: %s", namespace, e)
        return None, str(e)
    except ModuleIntegrityError as e:
        registry.quarantine_module(svc.path, namespace, module_id, str(e))
        svc.generator_if_loaded_forget(module_id)
        return None, f"module {module_id} failed its integrity check and was quarantined ({e})"
    return (module_id, path), ""
