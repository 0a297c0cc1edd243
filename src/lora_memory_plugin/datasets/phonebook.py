"""PhoneBook-style facts: fictional ``name -> NNN-NNN-NNNN`` pairs, seeded and deterministic.

The same shape as the paper's PhoneBook (arXiv 2603.01097): one record a fact, written
``Question: What is the phone number of X? Answer: 603-556-7631`` (about 22 tokens), scored by
strict exact match on the number. ``lora-memory calibrate`` uses it to measure how much a module
holds; tests and benchmarks use it wherever the paper's own slices are not needed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_FIRST = (  # noqa: SIM905 - a readable block of names
    "Aaron Abigail Adrian Aisha Alan Alice Amara Andre Anna Arjun Beatriz Benjamin Bianca Boris "
    "Caleb Carmen Chen Chloe Colin Dalia Daniel Daria Deepa Diego Elena Elif Emil Emma Ethan "
    "Farah Felix Fiona Gabriel Grace Hana Hector Ingrid Isaac Ivan Jamal Jana Jonas Julia Kai "
    "Karim Keiko Lars Layla Leon Lucia Malik Marta Mateo Maya Nadia Nikos Nora Omar Olga Oscar "
    "Paula Pedro Priya Quentin Rafael Rosa Ruben Sara Sean Sofia Tariq Tessa Tomas Uma Victor "
    "Vera Wei Yara Yusuf Zoe"
).split()
_LAST = (  # noqa: SIM905
    "Abbott Adeyemi Alvarez Andersen Baker Barros Becker Bishop Brandt Castillo Chang Costa "
    "Dalton Delgado Dubois Eriksen Esposito Farouk Fischer Fontaine Garcia Gomez Grant Haddad "
    "Hansen Hayes Horvat Ibarra Ito Jansen Jensen Kader Kaur Keller Kowalski Kruger Lambert Laine "
    "Lindqvist Lopez Maddox Moreau Morales Nakamura Navarro Nguyen Novak Okafor Olsen Ortega "
    "Park Patel Petrov Quinn Ramos Reyes Rossi Sato Schmidt Silva Sorensen Tanaka Torres Varga "
    "Vogel Walsh Weber Xu Yamada Young Zielinski"
).split()


@dataclass(frozen=True)
class Fact:
    """One PhoneBook fact."""

    name: str
    number: str

    @property
    def question(self) -> str:
        return f"What is the phone number of {self.name}?"

    @property
    def answer(self) -> str:
        return self.number

    @property
    def text(self) -> str:
        """The record text, in the paper's training format."""
        return f"Question: {self.question} Answer: {self.number}"


def phonebook(n: int, seed: int = 0) -> list[Fact]:
    """``n`` facts with distinct names and numbers (at most ``len(_FIRST) * len(_LAST)``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    limit = len(_FIRST) * len(_LAST)
    if n > limit:
        raise ValueError(f"at most {limit} distinct names, got n={n}")
    rng = random.Random(seed)
    pairs = rng.sample(range(limit), n)
    numbers: set[str] = set()
    facts = []
    for p in pairs:
        name = f"{_FIRST[p // len(_LAST)]} {_LAST[p % len(_LAST)]}"
        while True:
            number = f"{rng.randint(200, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
            if number not in numbers:
                numbers.add(number)
                break
        facts.append(Fact(name, number))
    return facts
