"""Stage 2 of consolidation: the questions a module must answer, each tied to its records.

Questions come from several sources and are deduplicated by their normalised text:

- **templates** for first-person statements, in the forms users ask back: "I moved to Lisbon" ->
  "Which city do I live in now?", "Where do I live?", "What city does the user live in?"; my X is
  Y, I work as/at, I'm allergic to, my sister Ines, our dog Biscuit is a corgi, ... Each template
  gives several phrasings; one per statement is **held out** (never trained) so the gate can see
  whether the module answers a question it was not shown;
- **the writer** (the local model or any LangChain chat model): questions only -- the teacher
  answers them, the writer's answers are never used;
- **QA-shaped records** keep their own question and answer (no teacher needed).

Pure functions: no model is loaded here except through the writer passed in.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .writers import DataWriter

Source = str  # "template", "writer" or "qa"


@dataclass(frozen=True)
class Question:
    """A question about some records; ``answer`` is set only for QA-shaped records."""

    text: str
    record_ids: tuple[str, ...]
    source: Source
    held_out: bool = False
    answer: str | None = None
    group: str = ""  # questions of one statement share a group (one of them is held out)
    value: str | None = None  # what a template read in the statement ("corgi"): the answer
    # must say it, or the teacher misread (the newest record's value after an update)


# a capitalised word, with inner dots ("St.Kilda") but not a sentence's closing one: "Lisbon. I'm"
_WORD = r"[A-Z][\w'&-]*(?:\.[\w'&-]+)*"
_NAME = rf"{_WORD}(?:\s+(?:de|da|do|van|von|&|{_WORD}))*"
_VALUE = r"[^.,;!?]+?"
_END = r"(?=\s*(?:[.,;!?]|\band\b|\bbut\b|\bso\b|\bsince\b|$))"
_RELATIVES = (
    "sister|brother|mother|mom|mum|father|dad|wife|husband|partner|girlfriend|boyfriend|son|"
    "daughter|friend|best friend|boss|manager|cousin|aunt|uncle|grandmother|grandfather|"
    "neighbour|neighbor|roommate|flatmate|colleague"
)
_PETS = "dog|cat|puppy|kitten|rabbit|bunny|parrot|bird|horse|hamster|turtle|fish"

# (pattern, phrasings); {x} names a captured group; the answer is group "v" unless the phrasing
# ends in "|group" (a question about another part of the statement).
_TEMPLATES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (
        re.compile(
            rf"\b(?:moved|relocated|moving|am moving|'m moving)\s+(?:back\s+)?to\s+(?P<v>{_NAME})",
        ),
        (
            "Which city do I live in now?",
            "Where do I live?",
            "Where did I move to?",
            "What city does the user live in?",
            "Where does the user live now?",
        ),
    ),
    (
        re.compile(rf"\bI\s+(?:now\s+)?live\s+in\s+(?P<v>{_NAME})"),
        (
            "Where do I live?",
            "Which city do I live in now?",
            "What city does the user live in?",
            "Where does the user live?",
        ),
    ),
    (
        re.compile(
            rf"\bI(?:\s+now)?\s+work(?:ing)?\s+(?:as\s+(?:a|an)\s+(?P<job>{_VALUE})\s+)?at\s+"
            rf"(?P<v>{_NAME})",
        ),
        (
            "Where do I work now?",
            "Where do I work?",
            "What is my job?|job",
            "Which company does the user work for?",
            "Where does the user work now?",
        ),
    ),
    (
        re.compile(
            rf"\bI(?:'m| am)\s+(?:now\s+)?(?:(?:a|an|the)\s+)?(?P<job>{_VALUE})\s+at\s+"
            rf"(?P<v>{_NAME})",
        ),
        (
            "Where do I work now?",
            "What is my job?|job",
            "Where do I work?",
            "What does the user do for a living?|job",
            "Where does the user work now?",
        ),
    ),
    (
        re.compile(
            rf"\bI(?:'m| am)\s+(?:very\s+|severely\s+|badly\s+)?allergic\s+to\s+"
            rf"(?P<v>{_VALUE}){_END}"
        ),
        (
            "What am I allergic to?",
            "Do I have any allergies?",
            "What is the user allergic to?",
            "Which allergy do I have?",
        ),
    ),
    (
        re.compile(
            rf"\b(?:[Mm]y|[Oo]ur)\s+(?P<rel>{_RELATIVES})\s+(?:is\s+called\s+|named\s+)?(?P<v>[A-Z][a-z]\w*)"
        ),
        (
            "What is my {rel}'s name?",
            "What is the name of my {rel}?",
            "What is the user's {rel} called?",
            "Who is my {rel}?",
        ),
    ),
    (
        re.compile(
            rf"\b(?:[Mm]y|[Oo]ur)\s+(?P<rel>{_RELATIVES})(?:\s+[A-Z]\w*)?\s+(?:visits|is visiting|"
            rf"comes|is coming|arrives|will visit|flies in)\s+(?:on|in|at)\s+(?P<v>{_VALUE}){_END}",
        ),
        (
            "When does my {rel} visit?",
            "When is my {rel} coming?",
            "When is the user's {rel} visiting?",
            "What date does my {rel} arrive?",
        ),
    ),
    (
        re.compile(
            rf"\b(?:[Mm]y|[Oo]ur)\s+(?P<pet>{_PETS})\s+(?:is\s+called\s+|named\s+)?(?P<v>[A-Z][a-z]\w*)"
        ),
        (
            "What is my {pet}'s name?",
            "What is the name of my {pet}?",
            "What is the user's {pet} called?",
            "What did I name my {pet}?",
        ),
    ),
    (
        re.compile(
            rf"\b(?:[Mm]y|[Oo]ur)\s+(?P<pet>{_PETS})(?:\s+[A-Z]\w*)?\s+is\s+an?\s+"
            rf"(?P<v>[a-z][\w -]*?){_END}",
        ),
        (
            "What breed is my {pet}?",
            "What kind of {pet} do I have?",
            "What breed is the user's {pet}?",
            "Which breed is my {pet}?",
        ),
    ),
    (
        re.compile(
            rf"\b[Mm]y\s+favou?rite\s+(?P<x>[a-z][a-z ]{{1,24}}?)\s+(?:is|are)\s+"
            rf"(?P<v>{_VALUE}){_END}"
        ),
        (
            "What is my favourite {x}?",
            "Which {x} do I like best?",
            "What is the user's favourite {x}?",
            "What {x} do I like most?",
        ),
    ),
    (
        re.compile(
            rf"\bthe\s+(?P<a>[a-z]+)\s+(?:for|of|to)\s+my\s+(?P<x>[a-z][a-z ]{{1,30}}?)\s+"
            rf"(?:is|are|was)\s+(?P<v>{_VALUE}){_END}",
        ),
        (
            "What is the {a} for my {x}?",
            "What is my {x} {a}?",
            "What is the {a} of the user's {x}?",
            "Can you remind me of my {x} {a}?",
        ),
    ),
    (
        re.compile(
            rf"\b(?<!for )(?<!of )(?<!to )[Mm]y\s+(?!favou?rite\b|{_RELATIVES}\b|{_PETS}\b)"
            rf"(?P<x>[a-z][a-z ]{{1,30}}?)\s+"
            rf"(?:is|are|was)\s+(?!a\b|an\b|the\b|not\b|so\b|very\b)(?P<v>{_VALUE}){_END}",
        ),
        (
            "What is my {x}?",
            "Can you remind me what my {x} is?",
            "What is the user's {x}?",
            "Do you know my {x}?",
        ),
    ),
)


_SPEAKER = re.compile(
    r"^\s*(?:\[[^\]\n]{1,40}\]\s*)?(?P<name>[A-Z][\w'.-]{0,30}(?:\s[A-Z][\w'.-]{0,30})?):\s+\S"
)
# a first-person question about the user -> the same question about a named speaker
_THIRD_PERSON: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b([Dd])o I\b"), r"\1oes {n}"),
    (re.compile(r"\bam I\b"), "is {n}"),
    (re.compile(r"\bAm I\b"), "Is {n}"),
    (re.compile(r"\b([Hh])ave I\b"), r"\1as {n}"),
    (re.compile(r"\bthe user's\b"), "{n}'s"),
    (re.compile(r"\bthe user\b"), "{n}"),
    (re.compile(r"\bI\b"), "{n}"),
)
_MY = re.compile(r"\b[Mm]y\b")
_LABELS = re.compile(
    r"(?i)^(?:notes?|update|reminder|fyi|ps|edit|important|todo|tip|warning|news|info|context|"
    r"source|title|subject|re|fwd|btw|also|question|answer|summary|facts?|memo)$"
)
"""Words a user's own turn may open with before a colon ("Update: I moved to Lisbon"):
labels, not speakers."""


def speaker(text: str) -> str | None:
    """The speaker a turn is written by, when its text names one -- ``"Caroline"`` for
    ``"[8 May 2023] Caroline: I went to a support group."`` (a dialogue between people, as
    LoCoMo and chat exports store it) -- else None: the user's own first-person turn."""
    m = _SPEAKER.match(text)
    if m is None or _LABELS.match(m.group("name").split()[0]):
        return None
    return m.group("name")


def third_person(question: str, name: str) -> str:
    """A question about the user asked about ``name``: "What am I allergic to?" -> "What is
    Caroline allergic to?", "What is my goal?" -> "What is Caroline's goal?"."""
    for pattern, repl in _THIRD_PERSON:
        question = pattern.sub(repl.format(n=name), question)
    # "my": the speaker's by name the first time, "their" once the question has named them
    # ("What did I name my dog?" -> "What did Caroline name their dog?")
    while m := _MY.search(question):
        owner = "their" if name in question[: m.start()] else f"{name}'s"
        question = question[: m.start()] + owner + question[m.end() :]
    return question


def template_questions(text: str, record_id: str, rng: random.Random) -> list[Question]:
    """Questions a user asks back about the first-person statements in ``text``.

    For each statement the template matches, every phrasing but one is trained; one, chosen
    with ``rng``, is held out for the gate. In a turn that names its speaker
    (:func:`speaker`), "I" is that speaker: the questions ask about them by name.
    """
    who = speaker(text)
    out: list[Question] = []
    for i, (pattern, phrasings) in enumerate(_TEMPLATES):
        for m in pattern.finditer(text):
            fields = {
                k: " ".join(v.split()).lower().rstrip(".") for k, v in m.groupdict().items() if v
            }
            asked: dict[str, str | None] = {}
            try:
                for p in phrasings:
                    phrasing, _, slot = p.partition("|")
                    asked_text = phrasing.format(**fields)
                    if who is not None:
                        asked_text = third_person(asked_text, who)
                    asked.setdefault(asked_text, fields.get(slot or "v"))
            except KeyError:
                continue
            held = rng.randrange(len(asked))
            group = f"{record_id}:{i}:{m.start()}"
            out.extend(
                Question(t, (record_id,), "template", held_out=j == held, group=group, value=v)
                for j, (t, v) in enumerate(asked.items())
            )
    return out


_QUESTION_LINE = re.compile(
    r"^\s*(?:[-*•]|\d+[.)]|Q\d*:|Question\s*\d*:)?\s*(?P<q>[^?\n]{6,200}\?)"
)

_LABEL = re.compile(r"^(?:Q\d*|Question\s*\d*)\s*:\s*", re.I)
_WRITER_SYSTEM = "You write questions. Ask only about what the note says."
_WRITER_TASK = (
    "Write three short questions that the note answers, one per line. Ask them the way the "
    "person who wrote the note would ask an assistant later."
)
_WRITER_SHOT = (
    "I keep my spare key under the blue flowerpot, and the alarm code is 2291.",
    "Where do I keep my spare key?\nWhat is my alarm code?\nWhat is under the blue flowerpot?",
)


_SPEAKER_TASK = (
    "Write three short questions that the note answers, one per line. Ask about what {n} "
    "says, and name {n} in every question."
)
_SPEAKER_SHOT = (
    "Sam",
    "[3 June 2023] Sam: I adopted a beagle named Rex last week, and we're going to the lake "
    "on Sunday.",
    "What did Sam adopt last week?\nWhat is the name of Sam's dog?\nWhere is Sam going on Sunday?",
)


def writer_prompt(text: str) -> list[dict[str, str]]:
    """A few-shot prompt asking for questions (only) about one record: the user's own turn is
    asked about in the first person, a turn that names its speaker (:func:`speaker`) about
    that speaker by name (the way people ask about a conversation they were not in)."""
    who = speaker(text)
    if who is None:
        task, shot, answer, this = _WRITER_TASK, _WRITER_SHOT[0], _WRITER_SHOT[1], _WRITER_TASK
    else:
        name, shot, answer = _SPEAKER_SHOT
        task, this = _SPEAKER_TASK.format(n=name), _SPEAKER_TASK.format(n=who)
    return [
        {"role": "system", "content": _WRITER_SYSTEM},
        {"role": "user", "content": f"{task}\n\nNote: {shot}"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"{this}\n\nNote: {text}"},
    ]


def parse_questions(output: str, limit: int = 3) -> list[str]:
    """Question lines of a writer's output (numbered, bulleted or plain), at most ``limit``."""
    found: list[str] = []
    for line in output.splitlines():
        m = _QUESTION_LINE.match(line)
        if m:
            q = _LABEL.sub("", " ".join(m.group("q").split()))
            if len(q.split()) >= 3 and q not in found:
                found.append(q)
    return found[:limit]


def writer_questions(
    writer: DataWriter, items: Sequence[tuple[str, str]], *, max_new_tokens: int = 48
) -> list[Question]:
    """The writer's questions for ``(record_id, text)`` items, one writer call for all."""
    if not items:
        return []
    outputs = writer.write([writer_prompt(text) for _, text in items], max_new_tokens)
    out: list[Question] = []
    for (rid, _), output in zip(items, outputs, strict=False):
        found = parse_questions(str(output))
        # with two or more, the last is held out for the gate
        out.extend(
            Question(
                q,
                (rid,),
                "writer",
                held_out=len(found) > 1 and i == len(found) - 1,
                group=f"{rid}:writer",
            )
            for i, q in enumerate(found)
        )
    return out


def key(question: str) -> str:
    """Normalised text for deduplication."""
    return " ".join(re.sub(r"[^\w\s]", " ", question.lower()).split())


@dataclass
class QuestionSet:
    """Deduplicated questions; a question asked of several records is tied to all of them."""

    questions: list[Question] = field(default_factory=list)
    duplicates: int = 0

    def add(self, new: Sequence[Question]) -> None:
        index = {key(q.text): i for i, q in enumerate(self.questions)}
        for q in new:
            k = key(q.text)
            if k not in index:
                index[k] = len(self.questions)
                self.questions.append(q)
                continue
            self.duplicates += 1
            old = self.questions[index[k]]
            ids = tuple(dict.fromkeys((*old.record_ids, *q.record_ids)))
            # held out if any source holds it out: an updated fact (two statements, the same
            # phrasings) keeps a held-out probe instead of training every phrasing
            held = old.held_out or q.held_out
            self.questions[index[k]] = Question(
                old.text,
                ids,
                old.source,
                held_out=held,
                answer=old.answer,
                group=old.group,
                value=q.value or old.value,  # records come oldest first: the newest value wins
            )

    @property
    def trained(self) -> list[Question]:
        return [q for q in self.questions if not q.held_out]

    @property
    def held_out(self) -> list[Question]:
        return [q for q in self.questions if q.held_out]


__all__ = [
    "Question",
    "QuestionSet",
    "key",
    "parse_questions",
    "speaker",
    "template_questions",
    "third_person",
    "writer_prompt",
    "writer_questions",
]
