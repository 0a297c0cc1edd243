"""Stage 1 of consolidation: what may be trained, and its text without injected memory.

Trainability is decided by provenance, never by the text's shape: only what a user said (a
``user`` turn) or a document holds is knowledge. Assistant, system and tool turns (the agent's own
recollections and guesses), and records the integrations wrote on the agent's behalf, are never
trained as facts.

Every memory block our integrations inject into prompts is cut from a user turn before anything
parses it, so recalled memories are not re-learned as things the user said:

- ``<memory>...</memory>`` (the LangChain middleware), ``<lora_memory>...</lora_memory>`` (the
  LlamaIndex Memory block tag) and any other ``<..memory..>`` tag pair,
- a ``Notes:`` block (the rag prompt, the LlamaIndex block's buffer lines) up to a blank line,
- ``Recalled: ...`` lines (the LlamaIndex block's parametric recall),
- ``What you remember about this user:`` headers,
- our ``Question: q Answer:`` wrapper around the real question.
"""

from __future__ import annotations

import re

from ..types import Record

# A tag pair whose name mentions memory, e.g. <memory>, <lora_memory>, <long_term_memory>; an
# unclosed one runs to the end of the text (a truncated injection is still an injection).
_MEMORY_TAG = re.compile(
    r"<(?P<tag>[A-Za-z_:-]*memory[A-Za-z_:-]*)\b[^>]*>.*?(?:</(?P=tag)\s*>|\Z)", re.S | re.I
)
_RECALLED = re.compile(r"^[ \t]*Recalled:[^\n]*$", re.M | re.I)  # linear: no \s across lines
_REMEMBER_HEADER = re.compile(
    r"^\s*What you remember about this user(?: \([^)\n]*\))?:\s*$", re.M | re.I
)

#: A long message the LlamaIndex memory block flushes is stored as a document with source
#: ``llama_index:<role>``; only the user's are knowledge.
LLAMA_INDEX_SOURCE = "llama_index:"


def strip_injected(text: str) -> str:
    """A user turn without the context our prompts and integrations inject into it."""
    text = _MEMORY_TAG.sub(" ", text)
    text = _RECALLED.sub("", text)
    kept: list[str] = []
    in_notes = False
    for line in text.splitlines():  # a notes block runs from its header to a blank line
        if line.strip().lower() == "notes:" or _REMEMBER_HEADER.fullmatch(line):
            in_notes = True
        elif in_notes and not line.strip():
            in_notes = False
        elif not in_notes:
            kept.append(line)
    text = "\n".join(" ".join(line.split()) for line in kept).strip()
    return _wrapped_question(text) or text


def _wrapped_question(text: str) -> str | None:
    r"""``"Question: Q Answer:"`` (a rag prompt's question, no answer) -> Q. Linear, unlike the
    regex it replaces (``\s*Question:\s*(.+?)\s*Answer:\s*``: quadratic over blank lines)."""
    low = text.lower()
    if not (low.startswith("question:") and low.endswith("answer:")) or len(text) < 17:
        return None
    return text[9:-7].strip() or None


def not_knowledge(rec: Record) -> bool:
    """The agent's own words, tool output, injected context, the integrations' agent writes."""
    md = rec.metadata
    if md.get("kind") == "turn":
        return bool(md.get("role", "user") != "user")
    source = md.get("source")
    return (
        isinstance(source, str)
        and source.startswith(LLAMA_INDEX_SOURCE)
        and source != f"{LLAMA_INDEX_SOURCE}user"
    )


def trainable_text(rec: Record) -> str:
    """The text consolidation may learn from ``rec`` ("" when it holds no user knowledge)."""
    if not_knowledge(rec):
        return ""
    if rec.metadata.get("kind") == "turn":
        return strip_injected(rec.text)
    return rec.text.strip()


__all__ = ["LLAMA_INDEX_SOURCE", "not_knowledge", "strip_injected", "trainable_text"]
