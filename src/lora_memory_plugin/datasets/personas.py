"""Natural personas: a person tells an assistant about their life over a few sessions.

Facts come up the way people say them ("We finally moved to Lisbon last month!"), some change in a
later session ("I switched jobs, I'm now head baker at Pao Dourado"), and the assistant's own
turns include a wrong guess that must never be learned as a fact. Questions are the ones a user
asks back, each with one exact answer (the latest value after an update).

:func:`lisbon_story` is the eight-turn conversation from the distillation issue;
:func:`personas` makes any number of seeded variations with other names, places and values.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DAY = 86400.0
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC: turns get created_at = START + day * DAY


@dataclass(frozen=True)
class PersonaTurn:
    content: str
    role: str  # "user" or "assistant"
    session_id: str
    day: int  # days after START; later sessions have later days

    @property
    def created_at(self) -> float:
        return START + self.day * DAY

    def to_dict(self) -> dict[str, object]:
        return {
            "content": self.content,
            "role": self.role,
            "session_id": self.session_id,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class PersonaQuestion:
    question: str
    answer: str  # exact: scored as a case-insensitive substring of the reply
    kind: str  # "fact", "update" (the latest value must win) or "guess" (a trap)
    stale: str = ""  # for "update" and "guess": the value that must NOT be answered


@dataclass(frozen=True)
class Persona:
    name: str
    turns: tuple[PersonaTurn, ...]
    questions: tuple[PersonaQuestion, ...]


def lisbon_story() -> Persona:
    """The issue's eight natural turns and six questions (rag answered 5/6 before consolidating)."""
    return _build(
        "lisbon",
        city="Lisbon",
        job="pastry chef",
        work="Forno Azul",
        new_job="head baker",
        new_work="Pao Dourado",
        allergy="hazelnuts",
        sibling="sister",
        sibling_name="Ines",
        visit="March 14th",
        pet="dog",
        pet_name="Biscuit",
        breed="corgi",
        guess_city="Porto",
    )


_CITIES = ["Lisbon", "Lyon", "Tromso", "Kyoto", "Quito", "Leeds", "Brno", "Graz", "Bergen", "Gent"]
_JOBS = ["pastry chef", "nurse", "architect", "data analyst", "teacher", "carpenter", "pharmacist"]
_NEW_JOBS = ["head baker", "team lead", "senior designer", "store manager", "lab manager"]
_WORKS = [
    "Forno Azul",
    "Pao Dourado",
    "Kestrel Labs",
    "Blue Harbor Clinic",
    "Maple & Finch",
    "Northwind Studio",
    "Casa Verde",
    "Orbit Bakery",
    "Tidewater School",
]
_ALLERGIES = ["hazelnuts", "shellfish", "penicillin", "peanuts", "sesame", "kiwi", "bee stings"]
_SIBLINGS = [("sister", ["Ines", "Marta", "Yuki", "Leila"]), ("brother", ["Tomas", "Ravi", "Olek"])]
_MONTHS = ["March", "April", "May", "June", "July", "September", "October"]
_PETS = [("dog", ["corgi", "beagle", "poodle", "husky"]), ("cat", ["siamese", "persian", "bengal"])]
_PET_NAMES = ["Biscuit", "Pepper", "Mochi", "Juniper", "Waffles", "Clover", "Ziggy", "Tofu"]


def personas(n: int, seed: int = 0) -> list[Persona]:
    """``n`` seeded personas shaped like :func:`lisbon_story`, with other values."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        city, guess = rng.sample(_CITIES, 2)
        work, new_work = rng.sample(_WORKS, 2)
        sibling, names = rng.choice(_SIBLINGS)
        pet, breeds = rng.choice(_PETS)
        day = rng.randint(2, 28)
        suffix = "th" if day not in (2, 3, 22, 23) else ("nd" if day in (2, 22) else "rd")
        out.append(
            _build(
                f"persona-{seed}-{i}",
                city=city,
                job=rng.choice(_JOBS),
                work=work,
                new_job=rng.choice(_NEW_JOBS),
                new_work=new_work,
                allergy=rng.choice(_ALLERGIES),
                sibling=sibling,
                sibling_name=rng.choice(names),
                visit=f"{rng.choice(_MONTHS)} {day}{suffix}",
                pet=pet,
                pet_name=rng.choice(_PET_NAMES),
                breed=rng.choice(breeds),
                guess_city=guess,
            )
        )
    return out


def _build(
    name: str,
    *,
    city: str,
    job: str,
    work: str,
    new_job: str,
    new_work: str,
    allergy: str,
    sibling: str,
    sibling_name: str,
    visit: str,
    pet: str,
    pet_name: str,
    breed: str,
    guess_city: str,
) -> Persona:
    pronoun = "she" if sibling == "sister" else "he"
    turns = (
        PersonaTurn(
            f"We finally moved to {city} last month, still unpacking boxes!", "user", "s1", 0
        ),
        PersonaTurn(
            f"How exciting! Are you enjoying {guess_city} so far?", "assistant", "s1", 0
        ),  # the assistant's wrong guess: never a fact
        PersonaTurn(
            f"Loving it. I work as a {job} at {work}, so early mornings for me.", "user", "s1", 0
        ),
        PersonaTurn(
            f"Quick thing for recipes: I'm allergic to {allergy}, so leave them out.",
            "user",
            "s1",
            0,
        ),
        PersonaTurn(
            f"My {sibling} {sibling_name} visits on {visit}, {pronoun} has never been here.",
            "user",
            "s2",
            9,
        ),
        PersonaTurn(f"Our {pet} {pet_name} is a {breed} and hates the tram.", "user", "s2", 9),
        PersonaTurn("Any tips for a rainy weekend?", "user", "s2", 9),
        PersonaTurn(
            f"Big news: I switched jobs, I'm now {new_job} at {new_work}.", "user", "s3", 30
        ),
    )
    questions = (
        PersonaQuestion("Which city do I live in now?", city, "fact", stale=guess_city),
        PersonaQuestion("What am I allergic to?", allergy, "fact"),
        PersonaQuestion(f"What is my {pet}'s name?", pet_name, "fact"),
        PersonaQuestion(f"What is my {sibling}'s name?", sibling_name, "fact"),
        PersonaQuestion(f"When does my {sibling} visit?", visit, "fact"),
        PersonaQuestion("Where do I work now?", new_work, "update", stale=work),
    )
    return Persona(name, turns, questions)


def score(reply: str, question: PersonaQuestion) -> bool:
    """Exact answer: the value appears in the reply, and a stale value does not."""
    text = reply.lower()
    if question.stale and question.stale.lower() in text:
        return False
    return question.answer.lower() in text
