"""Multi-fact profiles: several facts per person, and questions that need two of them.

Each fact is one QA record (``Question: In which city does Nora Becker live? Answer: Porto``), so
it trains without a writer; a *pair question* asks for two facts of the same person at once
("In which city does Nora Becker live, and what is the name of Nora Becker's dog?") and counts
as answered only when both values appear in the reply. Seeded and deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .phonebook import phonebook

# attribute -> (question about {name}, the clause a pair question uses, values)
_ATTRS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "city": (
        "In which city does {name} live?",
        "in which city does {name} live",
        ("Lyon", "Porto", "Tromso", "Kyoto", "Quito", "Leeds", "Brno", "Cork", "Graz", "Bergen"),
    ),
    "employer": (
        "Which company does {name} work for?",
        "which company does {name} work for",
        ("Vantrix", "Orbela", "Quillon", "Tessaro", "Halvern", "Mirokai", "Dunmore", "Zephyra"),
    ),
    "pet": (
        "What is the name of {name}'s dog?",
        "what is the name of {name}'s dog",
        ("Biscuit", "Pepper", "Mochi", "Juniper", "Waffles", "Clover", "Ziggy", "Tofu"),
    ),
    "instrument": (
        "Which instrument does {name} play?",
        "which instrument does {name} play",
        ("cello", "oboe", "banjo", "harp", "tuba", "sitar", "viola", "ukulele"),
    ),
}


@dataclass(frozen=True)
class Profile:
    name: str
    facts: tuple[tuple[str, str], ...]  # (attribute, value)

    def qa(self) -> list[tuple[str, str]]:
        """One (question, answer) per fact."""
        return [(_ATTRS[a][0].format(name=self.name), v) for a, v in self.facts]

    def texts(self) -> list[str]:
        """The records to store: one PhoneBook-format QA text per fact."""
        return [f"Question: {q} Answer: {a}" for q, a in self.qa()]

    def pair_questions(self) -> list[tuple[str, tuple[str, str]]]:
        """Questions combining two consecutive facts, with both expected values."""
        out = []
        for (a1, v1), (a2, v2) in zip(self.facts, self.facts[1:], strict=False):
            c1 = _ATTRS[a1][1].format(name=self.name)
            c2 = _ATTRS[a2][1].format(name=self.name)
            out.append((f"{c1[0].upper()}{c1[1:]}, and {c2}?", (v1, v2)))
        return out


def profiles(n: int, facts_per: int = 2, seed: int = 0) -> list[Profile]:
    """``n`` people with ``facts_per`` facts each (2..4 attributes)."""
    if not 2 <= facts_per <= len(_ATTRS):
        raise ValueError(f"facts_per must be in 2..{len(_ATTRS)}, got {facts_per}")
    rng = random.Random(seed)
    names = [f.name for f in phonebook(n, seed=seed + 104729)]
    out = []
    for name in names:
        attrs = rng.sample(sorted(_ATTRS), facts_per)
        out.append(Profile(name, tuple((a, rng.choice(_ATTRS[a][2])) for a in attrs)))
    return out
