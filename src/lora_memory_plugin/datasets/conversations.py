"""Conversation facts: user turns that state facts in passing, with held-out questions.

A turn says a fact the way people say it to an assistant ("Quick note: Nora Becker's
extension is 4471, if you need to reach them."); the question asks for it in other words ("What
is Nora Becker's phone extension?"), so a module that only memorised the turn's wording does not
get credit for free. Used to choose the synthetic-data mixture (`lora-memory bench mixtures`) and
by tests. Seeded and deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .phonebook import phonebook

_CITIES = [
    "Lyon",
    "Porto",
    "Tromso",
    "Kyoto",
    "Quito",
    "Leeds",
    "Brno",
    "Cork",
    "Graz",
    "Bergen",
    "Turku",
    "Split",
    "Gent",
    "Bilbao",
]
_TEAS = ["rooibos", "sencha", "oolong", "chamomile", "darjeeling", "genmaicha", "hibiscus"]
_PETS = ["Biscuit", "Pepper", "Mochi", "Juniper", "Waffles", "Clover", "Ziggy", "Tofu"]

# (statement template, question template, value kind); {name} is a person, {v} the value.
_COLLEAGUE = (
    (
        "Quick note: {name}'s extension is {v}, if you need to reach them.",
        "What is {name}'s phone extension?",
        "ext",
    ),
    ("{name} sits at desk {v} on the third floor.", "Which desk does {name} sit at?", "desk"),
    ("Remind me later that {name} is based in {v} now.", "In which city is {name} based?", "city"),
    ("FYI {name}'s badge number is {v}.", "What is {name}'s badge number?", "badge"),
)
_PERSONAL = (
    ("btw the code for my gym locker is {v}", "What is my gym locker code?", "code"),
    (
        "I always park in spot {v} at the office.",
        "Which parking spot do I use at the office?",
        "spot",
    ),
    ("Our dog is called {v}, he is three.", "What is the name of our dog?", "pet"),
    ("My favourite tea is {v}, just so you know.", "Which tea do I like best?", "tea"),
    ("My flight to Oslo next week is {v}.", "What is my flight number to Oslo?", "flight"),
)


@dataclass(frozen=True)
class ConversationFact:
    turn: str  # what the user said
    question: str  # held out: never in the training data as written
    answer: str


def _value(kind: str, rng: random.Random) -> str:
    if kind in ("ext", "code"):
        return f"{rng.randint(1000, 9999)}"
    if kind == "desk":
        return f"{rng.choice('ABCDEFGH')}{rng.randint(10, 99)}"
    if kind == "spot":
        return f"{rng.choice('PQRSTUVW')}-{rng.randint(100, 999)}"
    if kind == "badge":
        return f"{rng.randint(100000, 999999)}"
    if kind == "flight":
        return f"SK{rng.randint(1000, 9999)}"
    if kind == "city":
        return rng.choice(_CITIES)
    if kind == "tea":
        return rng.choice(_TEAS)
    if kind == "pet":
        return rng.choice(_PETS)
    raise ValueError(kind)


def conversation_facts(n: int, seed: int = 0) -> list[ConversationFact]:
    """``n`` facts: the five personal ones first, then facts about distinct colleagues."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    out = []
    for turn, question, kind in _PERSONAL[:n]:
        v = _value(kind, rng)
        out.append(ConversationFact(turn.format(v=v), question, v))
    names = [f.name for f in phonebook(max(0, n - len(out)), seed=seed + 1)]
    for i, name in enumerate(names):
        turn, question, kind = _COLLEAGUE[i % len(_COLLEAGUE)]
        v = _value(kind, rng)
        out.append(ConversationFact(turn.format(name=name, v=v), question.format(name=name), v))
    return out
