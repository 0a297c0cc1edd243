"""``ask``: pick the context for a mode, prompt the base model, time every phase."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, InvalidTypeError, UnknownNamespaceError
from ..types import Answer, Hit
from .prompts import MODES, build_messages, fit_context

if TYPE_CHECKING:
    from ..memory import LoRAMemory

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 8192
_VERIFIED: set[tuple[str, int, int]] = set()
_PROMPT_RESERVE = 64  # chat-template wrapper tokens around system + user
_ROUTE_K = 3  # nearest consolidated records considered for routing


def answer(
    mem: LoRAMemory,
    namespace: str,
    question: str,
    mode: str,
    *,
    k: int | None = None,
    max_new_tokens: int | None = None,
) -> Answer:
    from ..memory import _check_k
    from ..store.records import check_text

    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    question = check_text(question, what="question", limit=MAX_QUESTION_CHARS)
    gcfg = mem.config.generation
    k = _check_k(k) if k is not None else gcfg.rag_k
    if max_new_tokens is None:
        max_new_tokens = gcfg.max_new_tokens
    elif isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise InvalidTypeError(
            f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}"
        )
    elif not 1 <= max_new_tokens <= 4096:
        raise InvalidInputError(f"max_new_tokens must be in [1, 4096], got {max_new_tokens}")
    if not mem.buffer.has_namespace(namespace):
        raise UnknownNamespaceError(
            f"namespace {namespace!r} has no records in this store; write to it first or check "
            "the name (`lora-memory status`)"
        )

    timings: dict[str, float] = {}
    notes: list[str] = []
    t_start = time.perf_counter()
    gen = mem.generator()
    timings["load"] = time.perf_counter() - t_start

    effective = mode
    adapter: tuple[str, Path] | None = None
    if mode in ("lora", "hybrid"):
        adapter, why = _pick_module(mem, namespace, gen, question)
        if adapter is None:
            notes.append(
                f"mode {mode!r} answers from consolidated LoRA modules; {why}, so "
                "this answer used rag"
            )
            effective = "rag"

    window = gen.context_window
    budget = min(
        gcfg.context_budget,
        window
        - max_new_tokens
        - gen.count_tokens(question)
        - gen.count_tokens(gcfg.system_prompt)
        - _PROMPT_RESERVE,
    )
    t0 = time.perf_counter()
    context: list[Hit] = []
    if effective in ("rag", "hybrid"):
        found = mem.search(namespace, question, k=k)
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
        records = mem.get(namespace)
        records.sort(key=lambda r: float(r.metadata.get("created_at", 0.0)), reverse=True)
        hits = [Hit(r.id, r.text, 1.0, r.metadata) for r in records]
        kept, _ = fit_context(hits, max(budget, 0), gen.count_tokens)
        context = list(reversed(kept))  # chronological order in the prompt
        if len(kept) < len(records):
            notes.append(
                f"icl: {len(kept)} of {len(records)} records fit the {budget}-token budget "
                "(most recent kept)"
            )
    timings["retrieve"] = time.perf_counter() - t0

    messages = build_messages(gcfg.system_prompt, question, context)
    g = gen.chat(messages, max_new_tokens=max_new_tokens, adapter=adapter)
    timings["generate"] = g.seconds
    timings["total"] = time.perf_counter() - t_start
    return Answer(
        text=g.text,
        mode=effective,
        modules=(adapter[0],) if adapter else (),
        sources=tuple(context),
        context_tokens=g.prompt_tokens,
        timings=timings,
        requested_mode=mode,
        notes=tuple(notes),
        new_tokens=g.new_tokens,
    )


def _pick_module(
    mem: LoRAMemory, namespace: str, gen: Any, question: str
) -> tuple[tuple[str, Path] | None, str]:
    """The namespace's module to answer with.

    One module: that one. Several: the module holding the consolidated buffer record nearest to
    the question (each record names its module; max similarity, so a big module's many
    near-misses do not outvote a small module's exact match); the newest module when no record
    matches. A first router: ranked routing with confidence is the recall issue's.
    """
    from ..consolidation.engine import base_fingerprint
    from ..errors import ModuleIntegrityError
    from ..registry import modules as registry

    found = registry.list_modules(mem.path, namespace)
    if not found:
        return None, f"namespace {namespace!r} has none yet (run `lora-memory consolidate`)"
    chosen = found[-1]
    if len(found) > 1:
        by_id = {m.module_id: m for m in found}
        votes: dict[str, float] = {}
        for h in mem.search(namespace, question, k=_ROUTE_K, status="consolidated"):
            mid = h.metadata.get("module_id")
            if isinstance(mid, str) and mid in by_id:
                votes[mid] = max(votes.get(mid, -1.0), h.score)
        if votes:
            chosen = by_id[max(votes, key=lambda m: votes[m])]
    path = registry.modules_root(mem.path, namespace) / chosen.module_id
    weights = path / registry.ADAPTER_WEIGHTS
    try:
        st = weights.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in _VERIFIED:  # hash the adapter once per file version, not per question
            registry.verify_module(path, base_fingerprint(gen))
            _VERIFIED.add(key)
    except OSError as e:
        return None, f"module {chosen.module_id} cannot be read ({e})"
    except ModuleIntegrityError as e:
        logger.warning("module %s not used: %s", chosen.module_id, e)
        return None, f"module {chosen.module_id} failed its integrity check ({e})"
    return (chosen.module_id, path), ""
