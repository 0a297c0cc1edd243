"""Knowledge updates: a value that changes over time; the latest must win. Seeded, deterministic.

Each entity's phone number is stated, then restated with a new number (PhoneBook format, so the
records train as QA without a writer and score by strict exact match). Benchmarks add version 1,
consolidate, add version 2, and ask: an answer with the old number is stale.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .phonebook import phonebook


@dataclass(frozen=True)
class Update:
    """One entity whose value changed ``len(values) - 1`` times; ``values[-1]`` is current."""

    name: str
    values: tuple[str, ...]

    @property
    def question(self) -> str:
        return f"What is the phone number of {self.name}?"

    @property
    def answer(self) -> str:
        return self.values[-1]

    def text(self, version: int) -> str:
        """Version ``version``'s record (0 = the first value), in PhoneBook's format."""
        return f"Question: {self.question} Answer: {self.values[version]}"


def knowledge_updates(n: int, versions: int = 2, seed: int = 0) -> list[Update]:
    """``n`` entities with ``versions`` distinct numbers each (no number used twice)."""
    if versions < 2:
        raise ValueError(f"an update needs versions >= 2, got {versions}")
    facts = phonebook(n, seed=seed)
    rng = random.Random(seed + 7919)
    used = {f.number for f in facts}
    out = []
    for f in facts:
        values = [f.number]
        while len(values) < versions:
            number = f"{rng.randint(200, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
            if number not in used:
                used.add(number)
                values.append(number)
        out.append(Update(f.name, tuple(values)))
    return out
