"""Stage 2 of consolidation: the questions a module must answer, each tied to its records.

Questions come from several sources and are deduplicated by their normalised text:

- **templates** for first-person statements, in the forms users ask back: "I moved to Lisbon" ->
  "Which city do I live in now?", "Where do I live?", "What city does the user live in?"; my X is
  Y, I work as/at, I'm allergic to, my sister Ines, our dog Biscuit is a corgi, ...; and what
  people tell each other in a conversation: events with their time ("I went to a support group
  yesterday" -> "Where did I go?", "When did I go to a support group?"), plans, feelings and
  reasons. Each template gives several phrasings; one per statement is **held out** (never
  trained) so the gate can see whether the module answers a question it was not shown;
- **the writer** (the local model or any LangChain chat model): questions only -- the teacher
  answers them, the writer's answers are never used; a question not about its record
  (:func:`about`) is dropped;
- **QA-shaped records** keep their own question and answer (no teacher needed).

Pure functions: no model is loaded here except through the writer passed in.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .synth import content_stems

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
_VALUE = r"[^.,;!?]{1,100}?"  # bounded: a value is short, and caller text parses in linear time
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


# --- events, plans and feelings: what people tell each other in a conversation --------------
_ADV = r"(?:(?:just|finally|recently|also|actually|really|so|super|truly|totally)\s+)?"
_IRREGULAR = {
    "went": "go", "ran": "run", "made": "make", "took": "take", "saw": "see", "got": "get",
    "bought": "buy", "met": "meet", "won": "win", "began": "begin", "wrote": "write",
    "chose": "choose", "found": "find", "gave": "give", "left": "leave", "built": "build",
    "drew": "draw", "sang": "sing", "swam": "swim", "flew": "fly", "drove": "drive", "ate": "eat",
    "came": "come", "spent": "spend", "taught": "teach", "caught": "catch", "heard": "hear",
    "lost": "lose", "sold": "sell", "sent": "send", "brought": "bring", "held": "hold",
    "rode": "ride", "created": "create", "threw": "throw", "wore": "wear", "grew": "grow",
    "knew": "know",
}  # fmt: skip
# "created" is regular, but a vowel before its "at" keeps it out of _TAKES_E (treat, heat)
_PAST = rf"(?P<verb>{'|'.join(_IRREGULAR)}|[a-z]{{2,}}ed)"
_WHEN = (
    r"(?P<when>yesterday|today|tonight|this\s+(?:morning|afternoon|evening|week|weekend)|"
    r"last\s+(?:night|week|weekend|month|year|summer|winter|spring|fall|autumn|[A-Z][a-z]+day)|"
    r"(?:a|one|two|three|four|five|a\s+few|a\s+couple\s+of)\s+(?:days|weeks|months|years|day|"
    r"week|month|year)\s+ago|on\s+[A-Z][a-z]+day|next\s+(?:week|weekend|month|year|[A-Z][a-z]+day))"
)
# a clause ends at a sentence mark, a dash between spaces or a conjunction
_CLAUSE_END = (
    r"(?=\s*(?:[.,;!?]|\s[-\u2013\u2014]\s|\band\b|\bbut\b|\bso\b|\bsince\b|\bbecause\b|"
    r"'cause\b|\bwhich\b|$))"
)
_CLAUSE = r"[^.,;!?\u2013\u2014]{1,100}?"  # bounded: linear time on caller text
_PRONOUNS = frozenset(("it", "this", "that", "them", "him", "her", "me", "us", "you", "these"))
_WE = r"\b(?:I|[Ww]e)"


_TAKES_E = r"(?:[^aeiou](?:at|ar|ir|or|ur)|[cv]|dg|rg|iz|ys|[aeio]s|^us|aus|fus|mus|e|[^aeioul]l)$"
"""Stems that drop a final e before -ed: celebrat, shar, hir, stor, cur, danc, mov, judg, merg,
organiz, analys, rais, clos, us, caus, refus, agre, settl."""


def base_form(verb: str) -> str:
    """A past-tense verb's base form, for "When did I {base} ...?": a table of common irregular
    verbs, else the regular -ed rules (tried -> try, stopped -> stop, added -> add, moved ->
    move, raised -> raise, shared -> share, celebrated -> celebrate, painted -> paint). Crude,
    as a small writer is: a wrong form asks an odd question, which the teacher's reading and the
    gate judge like any other."""
    if verb in _IRREGULAR:
        return _IRREGULAR[verb]
    if not verb.endswith("ed") or len(verb) < 4:
        return verb
    if verb.endswith("ied"):
        return verb[:-3] + "y"
    stem = verb[:-2]
    # stopped, planned, travelled; not added, called, passed
    doubled = stem[-1] == stem[-2] and stem[-1] not in "aeiousz" + ("l" if len(stem) < 6 else "")
    if doubled and len(stem) >= 4 and stem[-3] in "aeiou":
        return stem[:-1]
    if re.search(_TAKES_E, stem) or (
        len(stem) <= 3 and re.search(r"[^aeiou][aeiou][^aeiouwxy]$", stem)
    ):
        return stem + "e"
    return stem


_EVENTS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (  # "I went to a support group yesterday"
        re.compile(
            rf"{_WE}\s+{_ADV}(?P<verb>went|moved|travell?ed|flew|drove|came|walked)\s+to\s+"
            rf"(?P<v>{_CLAUSE})(?:\s+{_WHEN})?{_CLAUSE_END}"
        ),
        ("Where did I {base}?", "Where did I {base} {when}?", "When did I {base} to {v}?|when"),
    ),
    (  # "I painted that lake sunrise last year"
        re.compile(
            rf"{_WE}\s+{_ADV}{_PAST}\s+(?!(?:to|about|up|out|off|back|with|in|on|at|for|from)\b|"
            r"that\s+(?:I|we|it|he|she|they|you)\b)"  # "met up", "realized that I ..."
            rf"(?P<v>{_CLAUSE})(?:\s+{_WHEN})?{_CLAUSE_END}"
        ),
        ("What did I {base}?", "What did I {base} {when}?", "When did I {base} {v}?|when"),
    ),
    (  # "I chose them 'cause they help LGBTQ+ folks"
        re.compile(
            rf"{_WE}\s+{_ADV}{_PAST}\s+(?P<obj>{_CLAUSE})\s+(?:because|'cause|cause)\s+"
            rf"(?P<v>{_CLAUSE}){_CLAUSE_END}"
        ),
        ("Why did I {base} {obj}?|v", "Why did I decide to {base} {obj}?|v"),
    ),
    (  # "We're thinking about going camping next month"
        re.compile(
            rf"{_WE}(?:'re|'m|\s+are|\s+am)\s+{_ADV}(?:thinking\s+(?:about|of)|planning(?:\s+on|"
            rf"\s+to)?|hoping\s+to|going\s+to|gonna)\s+(?P<v>{_CLAUSE}){_CLAUSE_END}"
        ),
        ("What am I planning?", "What are my plans?", "What am I thinking of doing?"),
    ),
    (  # "I'm keen on counseling", "I'm thrilled to make a family"
        re.compile(
            rf"\bI(?:'m|\s+am)\s+{_ADV}(?P<adj>keen|interested|excited|thrilled|passionate|"
            rf"nervous|worried|scared|proud|grateful|thankful)\s+(?P<prep>on|in|about|for|of|to)\s+"
            rf"(?P<v>{_CLAUSE}){_CLAUSE_END}"
        ),
        (
            "What am I {adj} {prep}?",
            "What is the user {adj} {prep}?",
            "What do I feel {adj} {prep}?",
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
    tables = ((_TEMPLATES, True), (_EVENTS, False))
    for t, (table, lower) in enumerate(tables):
        for i, (pattern, phrasings) in enumerate(table):
            for m in pattern.finditer(text):
                asked = _phrasings(m, phrasings, who, lower=lower)
                if not asked:
                    continue
                held = rng.randrange(len(asked))
                group = f"{record_id}:{t}.{i}:{m.start()}"
                out.extend(
                    Question(q, (record_id,), "template", held_out=j == held, group=group, value=v)
                    for j, (q, v) in enumerate(asked.items())
                )
    return out


def _phrasings(
    m: re.Match[str], phrasings: Sequence[str], who: str | None, *, lower: bool
) -> dict[str, str | None]:
    """A template's questions for one match -> the value each must be answered with.

    A phrasing names its answer's field after "|" (``v`` when it names none); "|when" asks for a
    time, which the teacher may give as a date, so its value is not checked. A phrasing that
    names a field the statement lacks is left out."""
    fields = {k: " ".join(v.split()).rstrip(".") for k, v in m.groupdict().items() if v}
    if lower:
        fields = {k: v.lower() for k, v in fields.items()}
    if "verb" in fields:
        fields["base"] = base_form(fields["verb"].lower())
    if fields.get("prep") == "to":  # "thrilled to make a family" -> "thrilled about"
        fields["prep"] = "about"
    if fields.get("v", "").lower() in _PRONOUNS:  # "We got this!": nothing to ask about
        return {}
    asked: dict[str, str | None] = {}
    for p in phrasings:
        phrasing, _, slot = p.partition("|")
        try:
            text = phrasing.format(**fields)
        except KeyError:
            continue
        if slot == "when" and "when" not in fields:
            continue
        if who is not None:
            text = third_person(text, who)
        asked.setdefault(text, None if slot == "when" else fields.get(slot or "v"))
    return asked


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


def about(question: str, text: str) -> bool:
    """Is a writer's ``question`` about ``text``: are at least half of its content words (by
    stem; the turn's speaker's name aside) in the text? The 135M writer asks about what a turn
    does not say ("What's the name of Caroline's son?" of "I'm thrilled to make a family for
    kids who need one."); the teacher, reading the turn, then builds an answer from the
    question's own words or the turn's first sentence."""
    who = speaker(text)
    asked = content_stems(question) - (content_stems(who) if who else set())
    return 2 * len(asked & content_stems(text)) >= len(asked) > 0


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
    "about",
    "base_form",
    "key",
    "parse_questions",
    "speaker",
    "template_questions",
    "third_person",
    "writer_prompt",
    "writer_questions",
]
