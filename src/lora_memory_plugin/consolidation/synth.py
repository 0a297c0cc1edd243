"""Synthetic training data: records -> grounded QA pairs, summaries, rewrites, passages.

Training on synthetic data beats raw text, QA > summary > rewrite > original, and mixtures are
best (arXiv 2603.01097). :func:`synthesize` applies a :class:`Mixture` of those strategies:

- QA-shaped records ("Question: ... Answer: ...") train as that pair, prompted exactly as ``ask``
  prompts, with no writer call (the path :func:`.data.build_examples` takes);
- user turns are the only turns holding new facts. Injected context (a ``Notes:`` block, text in
  ``<memory>`` tags) is cut first, then the writer states the turn as atomic facts ("The user's
  locker code is 4471."), then one QA pair per fact. Assistant turns (the agent's recollections)
  and system/tool turns are never trained on: they would re-teach memories as new facts;
- documents: QA pairs written sentence by sentence, a summary and a rewrite of the chunk;
  ``original`` is the chunk.

Small writers invent things, so every generated item passes a grounding check against its source
(:func:`answer_grounded`, :func:`text_grounded`); dropped items are counted in the stats. A record
left with nothing trains as its original text, so consolidating never loses a memory silently.
With ``writer=None`` the result is exactly :func:`.data.build_examples`'s.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import STRATEGIES, parse_mixture_names
from ..errors import InvalidInputError, ModelError
from ..types import Record
from .clean import not_knowledge, strip_injected, trainable_text
from .data import QA_MARK, Probe, build_examples, parse_qa_pairs, qa_pairs, superseded
from .trainer import Example
from .writers import DataWriter, Messages

# Completion budgets per stage: enough for the few-shot format, short enough for a CPU writer.
FACT_TOKENS = 64
FACT_QA_TOKENS = 40
SENTENCE_QA_TOKENS = 64
SUMMARY_TOKENS = 80
REWRITE_TOKENS = 128
MAX_FACTS_PER_TURN = 8
MAX_SENTENCES_PER_DOC = 12
MAX_PAIRS_PER_SENTENCE = 3
CONTEXT_MAX_WORDS = 6
"""A user turn this short ("4471.", "Lyon, since May") that replies to another speaker gets
that preceding turn as context."""


@dataclass(frozen=True)
class Mixture:
    """Which strategies to train on, e.g. ``Mixture.parse("qa+summary+original")``."""

    strategies: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.strategies:
            raise InvalidInputError(f"a mixture needs at least one of {'/'.join(STRATEGIES)}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise InvalidInputError(
                f"unknown strategy {unknown[0]!r} in mixture: use {'+'.join(STRATEGIES)} or 'all'"
            )
        canonical = tuple(s for s in STRATEGIES if s in self.strategies)
        object.__setattr__(self, "strategies", canonical)

    @classmethod
    def parse(cls, spec: str | Iterable[str] | Mixture) -> Mixture:
        """``"qa+summary"``, ``"all"``, ``["qa", "original"]`` or a Mixture -> a Mixture.

        Strings follow the config's syntax (:func:`.mixture.parse_mixture_names`), so a mixture
        the store config accepts is accepted here and vice versa.
        """
        if isinstance(spec, Mixture):
            return spec
        if isinstance(spec, str):
            try:
                return cls(parse_mixture_names(spec))
            except ValueError as e:
                raise InvalidInputError(str(e)) from e
        return cls(tuple(str(p).strip().lower() for p in spec))

    def __contains__(self, name: object) -> bool:
        return name in self.strategies

    def __str__(self) -> str:
        return "+".join(self.strategies)


Stats = dict[str, dict[str, int]]
"""Per strategy (and the ``facts`` stage): ``{"made", "kept", "dropped_ungrounded"}`` counts.
Plain dicts: the engine writes them into the module manifest as JSON."""


def _new_stats() -> Stats:
    names = ("facts", *STRATEGIES)
    return {n: {"made": 0, "kept": 0, "dropped_ungrounded": 0} for n in names}


@dataclass
class SynthResult:
    """Training examples, held-in probes (the grounded QA pairs) and what happened on the way.

    Attributes:
        stats: per strategy, plus ``facts`` (atomic facts extracted from user turns).
        skipped_turns: assistant/system/tool turns (and emptied user turns) not trained on.
        fallbacks: records whose strategies all came out empty, trained as original text.
    """

    examples: list[Example]
    probes: list[Probe]
    stats: Stats
    skipped_turns: int = 0
    fallbacks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": len(self.examples),
            "probes": len(self.probes),
            "stats": {k: dict(v) for k, v in self.stats.items()},
            "skipped_turns": self.skipped_turns,
            "fallbacks": self.fallbacks,
        }


# --- grounding -----------------------------------------------------------------------------

_TOKEN = re.compile(r"\d+(?:[.,:/-]\d+)*|[^\W\d_]+(?:'(?!s\b)[^\W\d_]+)*|[^\w\s]")
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_COMMON_WORDS = """
    a an the this that these those it its he she they we i you his her their our my your
    user users assistant s there here what where when who whom whose which why how is was are
    were be been has have had do does did can will would should also and but or so as at by for
    from in into of on to with after before while then last next summary text passage document
    fact facts note notes yes no not"""
_COMMON = frozenset(_COMMON_WORDS.split())


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")


def tokens(text: str) -> list[str]:
    """Lower-cased word, number and punctuation tokens. A number like 603-556-7631 is one token
    (so numbers match whole); a possessive splits ("okafor's" -> okafor ' s)."""
    return [t.lower() for t in _TOKEN.findall(_norm(text))]


def _words(toks: Iterable[str]) -> set[str]:
    """The word and number tokens."""
    return {t for t in toks if t[0].isalnum()}


def answer_grounded(answer: str, source: str) -> bool:
    """True when ``answer``'s words and numbers occur in ``source`` in a row, as whole tokens.

    Case, spacing and punctuation between words are ignored ("Basel, Strasbourg, and Cologne"
    matches "Basel, Strasbourg and Cologne"; "4471." matches "code 4471"); numbers match whole
    ("447" does not match "4471", "3" does not match "3.5").
    """
    want = [t for t in tokens(answer) if t[0].isalnum()]
    have = [t for t in tokens(source) if t[0].isalnum()]
    n = len(want)
    return n > 0 and any(have[i : i + n] == want for i in range(len(have) - n + 1))


def text_grounded(text: str, source: str) -> bool:
    """False when ``text`` brings a number or a capitalised name that ``source`` lacks, or shares
    no content word with it; paraphrase is allowed, invention of values is not."""
    src = tokens(source)
    if set(_NUMBER.findall(_norm(text))) - {t for t in src if t[0].isdigit()}:
        return False
    src_words = _words(src)
    for tok in _TOKEN.findall(_norm(text)):
        if tok[0].isupper():
            word = tok.lower()
            if word not in src_words and word not in _COMMON:
                return False
    content = _words(tokens(text)) - _COMMON
    return not content or bool(_stems(content) & _stems(src_words))


def _stems(words: Iterable[str]) -> set[str]:
    """Four-letter prefixes: a crude stem, enough to see that "lives" and "live" are related."""
    return {w[:4] for w in words}


def content_stems(text: str) -> set[str]:
    """Stems of ``text``'s content words (words and numbers, not the common ones)."""
    return _stems(t for t in tokens(text) if t[0].isalnum() and t not in _COMMON)


# --- parsing writer output -----------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
# ``\s*(?:\d+\s*)?:`` not ``\s*\d*\s*:``: two adjacent \s* split a whitespace run n ways
_LABEL = re.compile(r"^\s*(?:summary|rewrite|rewritten text|facts?)\s*:\s*", re.I)
_RAMBLE = re.compile(r"^\s*(?:text|user said|user|fact|example)\s*:", re.I)


def parse_lines(output: str, limit: int = MAX_FACTS_PER_TURN) -> list[str]:
    """Bulleted or plain lines -> sentences, stopping where the model starts a new example."""
    out: list[str] = []
    for raw in output.splitlines():
        if _RAMBLE.match(raw):
            break
        line = _LABEL.sub("", _BULLET.sub("", raw)).strip()
        if len(line.split()) >= 3 and not line.endswith(":") and line not in out:
            out.append(line)
    return out[:limit]


_TITLES = ("Mr", "Mrs", "Ms", "Dr", "St", "Prof", "Jr", "Sr", "No", "vs")
_SENTENCE_END = re.compile(
    "".join(rf"(?<!\b{t}\.)" for t in _TITLES) + r"(?<=[.!?])\s+(?=[\"'(]?[A-Z0-9])"
)


def split_sentences(text: str, limit: int = MAX_SENTENCES_PER_DOC) -> list[str]:
    """A chunk's sentences; a piece under four words ("Mr.", "It is.") joins the next one."""
    out: list[str] = []
    carry = ""
    for part in _SENTENCE_END.split(" ".join(text.split())):
        piece = f"{carry} {part}".strip()
        if len(piece.split()) < 4:
            carry = piece
        else:
            out.append(piece)
            carry = ""
    if carry:
        out.append(carry)
    return out[:limit]


def parse_passage(output: str) -> str:
    """A summary/rewrite: leading label dropped, cut where the model starts a new example."""
    lines: list[str] = []
    for raw in output.splitlines():
        if _RAMBLE.match(raw) or QA_MARK.match(raw):
            break
        lines.append(_LABEL.sub("", raw))
    return " ".join(" ".join(lines).split())


# --- prompts -------------------------------------------------------------------------------

_SYSTEM = "You write training data. Copy names and numbers exactly. Never invent facts."
_FACTS_TASK = 'List the facts the user states. One short sentence per line, starting "The user".'
_FACTS_SHOT = (
    "My sister Anna lives in Rome and her cat is called Tom.",
    "- The user's sister is named Anna.\n- The user's sister lives in Rome.\n"
    "- The user's sister has a cat called Tom.",
)
_FACT_QA_TASK = "Write one question the fact answers, and its short answer copied from the fact."
_FACT_QA_SHOT = (
    "The user's sister lives in Rome.",
    "Q: Where does the user's sister live?\nA: Rome",
)
_SENTENCE_QA_TASK = (
    "Write questions the sentence answers, each with a short answer copied from the sentence."
)
_SENTENCE_QA_SHOT = (
    "The Eiffel Tower was finished in 1889 and stands in Paris.",
    "Q: When was the Eiffel Tower finished?\nA: 1889\n"
    "Q: Where does the Eiffel Tower stand?\nA: Paris",
)
_DOC_SHOT = "The Eiffel Tower was finished in 1889. It is 330 metres tall and stands in Paris."
_SUMMARY_TASK = "Summarise the text in one sentence. Keep names and numbers exactly."
_SUMMARY_SHOT = "The Eiffel Tower in Paris, finished in 1889, is 330 metres tall."
_REWRITE_TASK = "Rewrite the text in other words. Keep every fact, name and number exactly."
_REWRITE_SHOT = (
    "Finished in 1889, the Eiffel Tower stands in Paris and measures 330 metres in height."
)


def _few_shot(task: str, label: str, shot: tuple[str, str], item: str) -> Messages:
    """System + one worked example + the item: small models follow a shown format best."""
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": f"{task}\n\n{label}: {shot[0]}"},
        {"role": "assistant", "content": shot[1]},
        {"role": "user", "content": f"{task}\n\n{label}: {item}"},
    ]


def facts_prompt(turn: str, context: str = "") -> Messages:
    item = f"{turn}\n(They were answering: {context})" if context else turn
    return _few_shot(_FACTS_TASK, "User said", _FACTS_SHOT, item)


def fact_qa_prompt(fact: str) -> Messages:
    return _few_shot(_FACT_QA_TASK, "Fact", _FACT_QA_SHOT, fact)


def sentence_qa_prompt(sentence: str) -> Messages:
    return _few_shot(_SENTENCE_QA_TASK, "Sentence", _SENTENCE_QA_SHOT, sentence)


def doc_prompt(strategy: Literal["summary", "rewrite"], text: str) -> Messages:
    task, shot = (_SUMMARY_TASK, _SUMMARY_SHOT) if strategy == "summary" else _REWRITE
    return _few_shot(task, "Text", (_DOC_SHOT, shot), text)


_REWRITE = (_REWRITE_TASK, _REWRITE_SHOT)


# --- synthesis -----------------------------------------------------------------------------


@dataclass
class _Source:
    """One record to synthesize from, with what it produced so far (per strategy)."""

    record: Record
    kind: Literal["turn", "document"]
    text: str
    context: str = ""
    facts: list[str] = field(default_factory=list)
    out: dict[str, list[Example]] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)


@dataclass(frozen=True)
class _Ready:
    """A QA-shaped record: its pair and probe, made without a writer."""

    example: Example
    probe: Probe


_Plan = list[_Source | _Ready | None]


@dataclass
class _Run:
    """One synthesis run: the writer, the system prompt QA examples use, and the stats."""

    writer: DataWriter
    system: str
    stats: Stats

    def write(self, prompts: list[Messages], max_new_tokens: int) -> list[str]:
        """One writer call for a whole stage; a wrong completion count is a writer bug."""
        if not prompts:
            return []
        outputs = self.writer.write(prompts, max_new_tokens)
        if len(outputs) != len(prompts):
            raise ModelError(
                f"writer {self.writer.name} returned {len(outputs)} completions "
                f"for {len(prompts)} prompts"
            )
        return [str(o) for o in outputs]

    def count(self, stage: str, grounded: bool) -> bool:
        """Count one made item of ``stage`` as kept or dropped; returns ``grounded``."""
        s = self.stats[stage]
        s["made"] += 1
        s["kept"] += grounded
        s["dropped_ungrounded"] += not grounded
        return grounded


def synthesize(
    records: Sequence[Record],
    writer: DataWriter | None,
    mixture: Mixture | str,
    system_prompt: str,
) -> SynthResult:
    """Training examples and held-in probes for ``records`` under ``mixture``.

    Examples follow the input order of records (strategies in :data:`STRATEGIES` order within a
    record) and each stage is one writer call over its prompts in that order; with a greedy
    writer the same inputs give the same result. ``writer=None`` runs only the writer-free
    strategies, exactly as :func:`.data.build_examples` (assistant/system/tool turns are skipped
    on both paths). QA-shaped records train as their pair whatever the
    mixture: they already are the best format.
    """
    mix = Mixture.parse(mixture)
    stats = _new_stats()
    if writer is None:
        return _without_writer(records, system_prompt, stats)
    run = _Run(writer, system_prompt, stats)
    plan = _plan(records, system_prompt, stats)
    turns = [p for p in plan if isinstance(p, _Source) and p.kind == "turn"]
    docs = [p for p in plan if isinstance(p, _Source) and p.kind == "document"]
    if "qa" in mix or "rewrite" in mix:
        _extract_facts(run, turns)
    if "qa" in mix:
        _facts_to_qa(run, turns)
        _docs_to_qa(run, docs)
    if "summary" in mix:
        _docs_to_passages(run, docs, "summary")
    if "rewrite" in mix:
        _docs_to_passages(run, docs, "rewrite")
        _facts_to_passages(run, turns)
    if "original" in mix:
        _originals(run, [*turns, *docs])
    return _assemble(plan, stats)


def _without_writer(records: Sequence[Record], system: str, stats: Stats) -> SynthResult:
    """Today's writer-free data, delegated so the two can never drift apart."""
    examples, probes = build_examples(records, system)
    for ex in examples:
        s = stats["qa" if ex.kind == "qa" else "original"]
        s["made"] += 1
        s["kept"] += 1
    return SynthResult(examples, probes, stats)


def _plan(records: Sequence[Record], system: str, stats: Stats) -> _Plan:
    """Per record: its ready pair (QA-shaped), a source to synthesize from, or None (skipped)."""
    previous = _previous_turns(records)
    stale = superseded(records)
    plan: _Plan = []
    for i, rec in enumerate(records):
        if not_knowledge(rec) or rec.id in stale:  # stale: a newer record answers it again
            plan.append(None)
            continue
        text = trainable_text(rec)  # cleaned first: an injected block's QA lines never teach
        pairs = qa_pairs(text) if text else None
        if pairs is not None:
            for question, answer in pairs:
                example = Example.qa(question, answer, system=system)
                plan.append(_Ready(example, Probe(question, answer, rec.id)))
                stats["qa"]["made"] += 1
                stats["qa"]["kept"] += 1
        elif rec.metadata.get("kind") == "turn":
            plan.append(_turn_source(rec, previous[i]))
        else:
            plan.append(_Source(rec, "document", rec.text))
    return plan


def _turn_source(rec: Record, previous: str) -> _Source | None:
    """A user turn, cleaned, with the turn before it when it is too short to stand alone."""
    if rec.metadata.get("role") != "user":
        return None
    text = strip_injected(rec.text)
    if not text:
        return None
    context = previous if len(text.split()) <= CONTEXT_MAX_WORDS else ""
    return _Source(rec, "turn", text, context)


def _previous_turns(records: Sequence[Record]) -> dict[int, str]:
    """Record index -> the cleaned text of the turn before it in its session when another
    speaker said it ("" otherwise): the question a short reply answers. The user's own previous
    turn is not context: a small writer copies its facts into the reply's."""
    sessions: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        sid = rec.metadata.get("session_id")
        if rec.metadata.get("kind") == "turn" and sid:
            sessions.setdefault(str(sid), []).append(i)
    previous = dict.fromkeys(range(len(records)), "")

    def when(i: int) -> tuple[float, int]:
        return float(records[i].metadata.get("created_at") or 0.0), i

    for members in sessions.values():
        members.sort(key=when)
        for before, after in itertools.pairwise(members):
            if records[before].metadata.get("role") != "user":
                previous[after] = " ".join(strip_injected(records[before].text).split())
    return previous


def _extract_facts(run: _Run, turns: list[_Source]) -> None:
    """User turn -> atomic facts; a fact must not bring a value the user did not say."""
    outputs = run.write([facts_prompt(t.text, t.context) for t in turns], FACT_TOKENS)
    for src, output in zip(turns, outputs, strict=True):
        for fact in parse_lines(output):
            if run.count("facts", text_grounded(fact, src.text)):
                src.facts.append(fact)


def _facts_to_qa(run: _Run, turns: list[_Source]) -> None:
    """One QA pair per fact; its answer must be in the user's own words (not just the fact)."""
    jobs = [(src, fact) for src in turns for fact in src.facts]
    outputs = run.write([fact_qa_prompt(fact) for _, fact in jobs], FACT_QA_TOKENS)
    for (src, fact), output in zip(jobs, outputs, strict=True):
        for question, answer in parse_qa_pairs(output)[:1]:
            _add_grounded_qa(run, src, question, answer, basis=f"{src.text}\n{fact}")


def _docs_to_qa(run: _Run, docs: list[_Source]) -> None:
    """QA pairs sentence by sentence: a 135M writer asked about a whole chunk writes one
    question, often about something the chunk does not say; about one sentence it stays on it."""
    jobs = [(src, sent) for src in docs for sent in split_sentences(src.text)]
    outputs = run.write([sentence_qa_prompt(sent) for _, sent in jobs], SENTENCE_QA_TOKENS)
    for (src, _), output in zip(jobs, outputs, strict=True):
        for question, answer in parse_qa_pairs(output)[:MAX_PAIRS_PER_SENTENCE]:
            _add_grounded_qa(run, src, question, answer, basis=src.text)


def _add_grounded_qa(run: _Run, src: _Source, question: str, answer: str, basis: str) -> None:
    """Keep a pair whose answer is in the record's own text and whose question stays on
    ``basis`` (the text, or a turn plus the grounded fact asked about)."""
    if any(p.question == question for p in src.probes):
        return  # the same question twice (a rambling writer) counts once
    if run.count("qa", answer_grounded(answer, src.text) and text_grounded(question, basis)):
        answer = _trim_answer(answer)
        src.out.setdefault("qa", []).append(Example.qa(question, answer, system=run.system))
        src.probes.append(Probe(question, answer, src.record.id))
        mine = first_person(question) if src.kind == "turn" else question
        if mine != question:  # the user asks the agent "What is my ...?", not "the user's"
            src.out["qa"].append(Example.qa(mine, answer, system=run.system))


_USERS = re.compile(r"\bthe user's\b", re.I)


def first_person(question: str) -> str:
    """The question as the user would ask it: "What is the user's code?" -> "What is my code?"

    Possessives only: the rest of "the user" needs grammar a regex does not have.
    """
    return _USERS.sub("my", question)


def _trim_answer(answer: str) -> str:
    """An answer without surrounding spaces or a sentence's final period ("4471." -> "4471")."""
    answer = " ".join(answer.split())
    return answer[:-1] if answer.endswith(".") and not answer[-2:-1].isupper() else answer


def _docs_to_passages(
    run: _Run, docs: list[_Source], strategy: Literal["summary", "rewrite"]
) -> None:
    budget = SUMMARY_TOKENS if strategy == "summary" else REWRITE_TOKENS
    outputs = run.write([doc_prompt(strategy, d.text) for d in docs], budget)
    for src, output in zip(docs, outputs, strict=True):
        passage = parse_passage(output)
        if passage and run.count(strategy, text_grounded(passage, src.text)):
            src.out.setdefault(strategy, []).append(Example.text(passage))


def _facts_to_passages(run: _Run, turns: list[_Source]) -> None:
    """A turn's rewrite is its grounded facts as one passage (checked when extracted)."""
    for src in turns:
        if src.facts:
            run.count("rewrite", True)
            src.out.setdefault("rewrite", []).append(Example.text(" ".join(src.facts)))


def _originals(run: _Run, sources: list[_Source]) -> None:
    """The text itself (a user turn without its injected context)."""
    for src in sources:
        run.count("original", True)
        src.out.setdefault("original", []).append(Example.text(src.text))


def _assemble(plan: _Plan, stats: Stats) -> SynthResult:
    """Examples and probes in record order; a source left with nothing trains as its text."""
    result = SynthResult([], [], stats)
    for item in plan:
        if item is None:
            result.skipped_turns += 1
        elif isinstance(item, _Ready):
            result.examples.append(item.example)
            result.probes.append(item.probe)
        else:
            if not item.out:
                result.fallbacks += 1
                stats["original"]["made"] += 1
                stats["original"]["kept"] += 1
                item.out["original"] = [Example.text(item.text)]
            for strategy in STRATEGIES:
                result.examples.extend(item.out.get(strategy, ()))
            result.probes.extend(item.probes)
    return result
