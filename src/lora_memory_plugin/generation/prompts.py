"""Prompt building for each answer mode, within a token budget.

The same system prompt is sent in every mode (and later in training), so a chat template's default
system prompt never sneaks in and the model sees one consistent format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..types import Hit


def created_at(meta: Mapping[str, Any]) -> float | None:
    """A record's ``created_at`` from its metadata; None when it has none (or not a number)."""
    ts = meta.get("created_at")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return None
    return float(ts)


def note_day(hit: Hit) -> str | None:
    """The day a record was written (``YYYY-MM-DD``, UTC); None when it has no ``created_at``."""
    ts = created_at(hit.metadata)
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return None


def format_notes(hits: Sequence[Hit]) -> str:
    """The notes block of a ``rag`` prompt: one line a record, each with the day it was written.

    When the notes were written on more than one day they are listed oldest first, so the latest
    of two conflicting turns can win ("I work at Forno Azul" ... a month later "I'm now head
    baker at Pao Dourado"); otherwise the best hit comes first, as retrieved. Measured on
    SmolLM2-135M (the Lisbon story and 10 seeded personas, 66 questions, the same retrieved
    hits): this answered 49/66; the previous format (best first, role tags, undated) 38/66, and
    dating only notes that span several days 40/66.
    """
    days = {note_day(h) for h in hits} - {None}
    ordered = sorted(hits, key=lambda h: created_at(h.metadata) or 0.0) if len(days) > 1 else hits
    return "\n".join(note_line(h) for h in ordered)


def note_line(hit: Hit) -> str:
    """One rag note: ``- [YYYY-MM-DD] [source] text``, with the parts the record has."""
    meta = hit.metadata
    text = " ".join(hit.text.split())
    source = meta.get("source") if meta.get("kind") != "turn" else None
    head = "".join(f"[{part}] " for part in (note_day(hit), source) if part)
    return f"- {head}{text}"


def format_record(hit: Hit) -> str:
    """A record for an agent's memory block (the integrations): role or source tag, then text."""
    meta = hit.metadata
    text = " ".join(hit.text.split())
    if meta.get("kind") == "turn" and meta.get("role"):
        return f"- ({meta['role']}) {text}"
    if meta.get("source"):
        return f"- [{meta['source']}] {text}"
    return f"- {text}"


def fit_context(
    hits: Sequence[Hit], budget: int, count_tokens: Callable[[str], int]
) -> tuple[list[Hit], int]:
    """The leading hits whose formatted lines fit ``budget`` tokens, and the tokens they use."""
    used, kept = 0, []
    for hit in hits:
        n = count_tokens(note_line(hit)) + 1
        if used + n > budget:
            break
        kept.append(hit)
        used += n
    return kept, used


def build_messages(system: str, question: str, context: Sequence[Hit] = ()) -> list[dict[str, str]]:
    """Chat messages for one question, with memory notes when ``context`` is given."""
    if context:
        # Measured on SmolLM2-135M: "Notes / Question / Answer:" answered 5/5 personal-fact
        # questions; a looser "Memory notes" framing 1-2/5. Note order: format_notes.
        notes = format_notes(context)
        user = f"Notes:\n{notes}\n\nQuestion: {question}\nAnswer:"
    else:
        user = question
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
