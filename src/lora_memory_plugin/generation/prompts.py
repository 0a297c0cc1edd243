"""Prompt building for each answer mode, within a token budget.

The same system prompt is sent in every mode (and later in training), so a chat template's default
system prompt never sneaks in and the model sees one consistent format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..types import Hit

MODES = ("auto", "hybrid", "lora", "rag", "icl", "base")


def format_record(hit: Hit) -> str:
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
        n = count_tokens(format_record(hit)) + 1
        if used + n > budget:
            break
        kept.append(hit)
        used += n
    return kept, used


def build_messages(system: str, question: str, context: Sequence[Hit] = ()) -> list[dict[str, str]]:
    """Chat messages for one question, with memory notes when ``context`` is given."""
    if context:
        # Measured on SmolLM2-135M: "Notes / Question / Answer:" with the best hit first
        # answered 5/5 personal-fact questions; a looser "Memory notes" framing 1-2/5.
        notes = "\n".join(format_record(h) for h in context)
        user = f"Notes:\n{notes}\n\nQuestion: {question}\nAnswer:"
    else:
        user = question
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
