"""How a module reads: a control set of notes unrelated to any store.

``hybrid`` and ``auto`` answer with the module *and* the retrieved notes, so a module that breaks
the model's reading makes memory worse even where retrieval found the answer. The gate's hybrid
check (:mod:`.gate`) compares hybrid with rag on the module's own held-out probes, which can be
few: on LoCoMo conv-26 (first 2 sessions, 33 records, seed 0, 2 cores) a module with held-out
agreement 0.5 and hybrid 0.5 >= rag 0.25 on its 4 probes (drift +22%) was committed once
``held_out_target`` was lowered to 0.5; with it, hybrid scored token F1 0.075 on LoCoMo's
questions against rag's 0.162, replying "The person who is not answering the question is Sam.".
On these sixteen notes the base model read 15 right, that module 8.

The gate asks them through the base model and through the module, in its mixed batch, and
records both counts; ``auto`` never adds retrieved notes to a module that reads more than
``gate.READING_SLACK`` of them worse. The notes mix the shapes records take (dated conversation
turns, plain facts); each answer is a single value, judged in the reply's first sentence,
case-insensitively.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..generation.prompts import build_messages
from ..types import Hit
from .teacher import first_sentence


@dataclass(frozen=True)
class ReadingItem:
    note: str
    question: str
    value: str  # a right reply's first sentence contains it (case-insensitive)


CONTROL_READING: tuple[ReadingItem, ...] = (
    ReadingItem(
        "[3 June 2024] Tom: I finally adopted a grey cat and named her Pepper.",
        "What is the name of Tom's cat?",
        "Pepper",
    ),
    ReadingItem(
        "[12 May 2024] Ana: My brother Luis is studying medicine in Madrid.",
        "Which city does Ana's brother study in?",
        "Madrid",
    ),
    ReadingItem(
        "The museum opens at nine in the morning and closes at six in the evening.",
        "When does the museum close?",
        "six",
    ),
    ReadingItem(
        "[8 July 2023] Sam: I ran my first marathon in Berlin last Sunday.",
        "Where did Sam run his first marathon?",
        "Berlin",
    ),
    ReadingItem(
        "Copper is a soft metal that conducts electricity very well.",
        "Which metal conducts electricity very well?",
        "copper",
    ),
    ReadingItem(
        "[20 March 2024] Priya: I started learning the violin this spring.",
        "Which instrument is Priya learning?",
        "violin",
    ),
    ReadingItem(
        "The train to Porto leaves from the north platform at 10:15.",
        "Which platform does the train to Porto leave from?",
        "north",
    ),
    ReadingItem(
        "[2 February 2024] Leo: My favourite dish is my grandmother's lasagna.",
        "What is Leo's favourite dish?",
        "lasagna",
    ),
    ReadingItem(
        "[14 April 2024] Mia: We painted the kitchen yellow over the weekend.",
        "What colour did Mia paint the kitchen?",
        "yellow",
    ),
    ReadingItem(
        "The library lends each member up to six books for three weeks.",
        "How many books can a member borrow?",
        "six",
    ),
    ReadingItem(
        "[9 September 2023] Omar: My daughter Lina just started school in Dublin.",
        "What is the name of Omar's daughter?",
        "Lina",
    ),
    ReadingItem(
        "Mount Kilimanjaro, the highest mountain in Africa, lies in Tanzania.",
        "Which country is Mount Kilimanjaro in?",
        "Tanzania",
    ),
    ReadingItem(
        "[30 January 2024] Grace: I switched from tea to coffee this winter.",
        "What does Grace drink now?",
        "coffee",
    ),
    ReadingItem(
        "The bakery on Elm Street sells rye bread only on Fridays.",
        "On which day does the bakery sell rye bread?",
        "Friday",
    ),
    ReadingItem(
        "[5 November 2023] Ken: I bought a red bicycle to ride to work.",
        "What colour is Ken's bicycle?",
        "red",
    ),
    ReadingItem(
        "Penguins live mostly in the Southern Hemisphere, many of them in Antarctica.",
        "Where do many penguins live?",
        "Antarctica",
    ),
)


def reading_messages(
    system: str, items: Sequence[ReadingItem] = CONTROL_READING
) -> list[list[dict[str, str]]]:
    """Each item as rag would ask it: the question with its note in context."""
    return [
        build_messages(system, it.question, [Hit(f"reading-{i}", it.note, 1.0, {"kind": "note"})])
        for i, it in enumerate(items)
    ]


def read_right(replies: Sequence[str], items: Sequence[ReadingItem] = CONTROL_READING) -> int:
    """How many replies give their item's value in the first sentence."""
    return sum(
        it.value.lower() in first_sentence(r).lower() for it, r in zip(items, replies, strict=True)
    )


__all__ = ["CONTROL_READING", "ReadingItem", "read_right", "reading_messages"]
