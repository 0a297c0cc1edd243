"""Stage 3 of consolidation: the teacher -- the base model reading the records -- answers.

Context distillation (Knowledge Modules, arXiv 2503.08727; Cartridges, arXiv 2506.06266): a module
is trained to say what the base model says when it *reads* the records, so its ceiling is the
model's own reading quality and it never learns a writer's invention. The teacher prompt is the
exact ``rag`` prompt (:func:`~lora_memory_plugin.generation.prompts.build_messages`) with the
question's records as the notes, each with its date, oldest first when they span several days
(:func:`~lora_memory_plugin.generation.prompts.format_notes`, as ``rag`` shows them), so the
latest of two conflicting turns can win.

Answers are generated greedily in batches, cut to their first sentence, and kept only when
grounded in the records (no name or number the records lack, a content word they share), not a
refusal -- a tail that alone brings what the records lack is cut first ("..., Portugal.") -- and
informative (:func:`informative`: the answer tells something of the records the question did not
say); a dropped question is counted, never trained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..generation.prompts import build_messages, created_at
from ..types import Hit, Record
from .questions import Question
from .synth import _COMMON, content_stems, text_grounded, tokens

TEACHER_TOKENS = 40
"""Answer budget: one sentence."""
_REFUSAL = re.compile(
    r"\b(?:i\s+(?:do not|don't|cannot|can't)\s+(?:know|find|see|tell|recall)|not\s+(?:mentioned|"
    r"stated|specified|provided|given)|no\s+(?:information|mention|notes?)|i'm\s+sorry|"
    r"unfortunately|there\s+is\s+no)\b",
    re.I,
)
_WEEKDAY = r"(?:mon|tues|wednes|thurs|fri|satur|sun)day"
_PERIOD = (
    rf"(?:night|morning|afternoon|evening|week|weekend|month|year|spring|summer|autumn|fall|"
    rf"winter|{_WEEKDAY})"
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_TIME = re.compile(
    rf"(?i)\b(?:\d|yesterday|today|tonight|tomorrow|ago|{_WEEKDAY}|{_MONTH}\b|"
    rf"(?:last|next|this|that|every)\s+{_PERIOD})"
)
"""A time in an answer to a "When ...?" question."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_LABEL = re.compile(r"^(?:\[[^\]\n]{1,40}\]\s*)*(?:[A-Z][\w'.-]{0,30}:\s+)?")


@dataclass(frozen=True)
class Taught:
    """A question, the teacher's answer and the records it read."""

    question: Question
    answer: str
    context: tuple[Hit, ...]
    grounded: bool
    misread: bool = False  # a template's value (the statement's "corgi") is not in the answer
    empty: bool = False  # grounded, but tells nothing the question did not (:func:`informative`)


def note(rec: Record) -> Hit:
    """A record as a rag note (``build_messages`` dates it, as rag does)."""
    return Hit(rec.id, rec.text, 1.0, dict(rec.metadata))


def teacher_context(question: Question, records: Mapping[str, Record]) -> tuple[Hit, ...]:
    """The question's records as notes, oldest first."""
    recs = [records[rid] for rid in question.record_ids if rid in records]
    recs.sort(key=lambda r: created_at(r.metadata) or 0.0)
    return tuple(note(r) for r in recs)


def unlabelled(text: str) -> str:
    """The reply without a leading speaker label or date a small model copies from dialogue
    notes ("Cherry: Caroline's goal is ...", "[2023-05-08] Melanie: ..."): not an answer."""
    return _LABEL.sub("", text.strip(), count=1)


def first_sentence(text: str) -> str:
    """The reply's first line (past a copied speaker label), cut after its first sentence."""
    text = unlabelled(text)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return _SENTENCE.split(line, maxsplit=1)[0].strip()


def past_first_sentence(text: str) -> bool:
    """Has the reply gone past its first sentence? Then :func:`first_sentence` of it is final --
    it stays the same however the reply goes on -- and generating more is wasted."""
    rest = unlabelled(text)
    return bool(rest) and first_sentence(rest) != rest


def grounded_answer(answer: str, context: Sequence[Hit]) -> bool:
    """Not empty, not a refusal, and grounded in the notes (:func:`.synth.text_grounded`)."""
    if not answer or _REFUSAL.search(answer):
        return False
    source = " ".join(h.text for h in context)
    return text_grounded(answer, source)


def informative(answer: str, question: str, context: Sequence[Hit]) -> bool:
    """Does ``answer`` tell something of the notes that ``question`` did not already say?

    At least one content word (by stem) comes from the notes and not from the question, and at
    least half of the words the answer adds come from the notes. A 135M teacher reading a
    chatty turn often restates the question around one of its own words ("What's the name of
    Caroline's son?" -> "The name of Caroline's son is Caroline.") or builds a sentence of
    its own around a shared word ("What is the charity race?" -> "The charity race is a type of
    event where a charity or organization provides a prize ..."): grounded by
    :func:`grounded_answer`'s measure, and wrong. An answer to "When ...?" must name a time."""
    if question.lstrip().lower().startswith("when ") and not _TIME.search(answer):
        return False  # "When did Melanie run a charity race?" -> "Hey Caroline, since we ..."
    added = content_stems(answer) - content_stems(question)
    from_notes = added & content_stems(" ".join(h.text for h in context))
    return bool(from_notes) and 2 * len(from_notes) >= len(added)


def trim_ungrounded(answer: str, context: Sequence[Hit]) -> str:
    """The answer, or its longest grounded head cut at a comma when only a tail brings what the
    notes lack: "You live in Lisbon, Portugal." -> "You live in Lisbon." (the model's world
    knowledge, not the records', is left out rather than losing the question)."""
    if grounded_answer(answer, context):
        return answer
    parts = answer.rstrip(".!").split(", ")
    for n in range(len(parts) - 1, 0, -1):
        head = ", ".join(parts[:n]).rstrip() + "."
        if len(head.split()) >= 2 and grounded_answer(head, context):
            return head
    return answer


def teach(
    gen: Any,
    questions: Sequence[Question],
    records: Mapping[str, Record],
    system: str,
    *,
    batch_size: int = 32,
    max_new_tokens: int = TEACHER_TOKENS,
) -> list[Taught]:
    """The teacher's answers to ``questions`` (QA-shaped ones keep their own answer).

    Questions about the same records share the prompt up to the question: the notes are
    prefilled once per record set (``share_prefix``), which is most of the teacher's work."""
    todo = [q for q in questions if q.answer is None]
    contexts = [teacher_context(q, records) for q in todo]
    messages = [build_messages(system, q.text, ctx) for q, ctx in zip(todo, contexts, strict=True)]
    outs = (
        gen.chat_many(
            messages,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            done=past_first_sentence,
            share_prefix=True,
        )
        if todo
        else []
    )
    taught: dict[int, Taught] = {}
    for q, ctx, out in zip(todo, contexts, outs, strict=True):
        answer = trim_ungrounded(first_sentence(out.text), ctx)
        misread = q.value is not None and not says_value(answer, q.value)
        ok = grounded_answer(answer, ctx)
        empty = ok and not informative(answer, q.text, ctx)
        grounded = ok and not misread and not empty
        taught[id(q)] = Taught(q, answer, ctx, grounded, misread, empty)
    result = []
    for q in questions:
        if q.answer is not None:
            result.append(Taught(q, q.answer, teacher_context(q, records), True))
        else:
            result.append(taught[id(q)])
    return result


def says_value(answer: str, value: str) -> bool:
    """Does ``answer`` say every word of ``value`` (a template's reading of the statement)?"""
    got = set(tokens(answer))
    return all(t in got for t in tokens(value) if t[0].isalnum())


def value_tokens(expected: str, sources: str) -> set[str]:
    """The expected answer's words and numbers that come from the records (its "value")."""
    src = set(tokens(sources))
    return {t for t in tokens(expected) if t[0].isalnum() and t not in _COMMON and t in src}


def agrees(reply: str, expected: str, sources: str, question: str = "") -> bool:
    """Does ``reply`` give the same answer as ``expected`` (the teacher's)?

    Both may phrase it differently ("You live in Lisbon." / "Lisbon, since last month"): what
    must match is the value -- the expected answer's words that come from the records and are
    not the ``question``'s own ("When does my sister visit?" -> "March 14th", not "sister").
    When the expected answer has none, its normalised text must appear in the reply.
    """
    want = value_tokens(expected, sources) - set(tokens(question))
    got = set(tokens(reply))
    if want:
        return want <= got
    norm = " ".join(t for t in tokens(expected) if t[0].isalnum())
    return bool(norm) and norm in " ".join(t for t in tokens(reply) if t[0].isalnum())


__all__ = [
    "TEACHER_TOKENS",
    "Taught",
    "agrees",
    "first_sentence",
    "grounded_answer",
    "informative",
    "past_first_sentence",
    "says_value",
    "teach",
    "teacher_context",
    "trim_ungrounded",
    "unlabelled",
    "value_tokens",
]
