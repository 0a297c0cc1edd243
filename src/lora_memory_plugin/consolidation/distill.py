"""Stage 4 of consolidation: records -> distillation examples and held-out probes.

The chain (each stage its own module, pure where it can be):

1. :mod:`.clean` -- what may be trained (provenance) and its text without injected memory;
2. :mod:`.questions` -- templates, the writer's questions, QA-shaped records' own pairs;
   one phrasing per statement held out;
3. :mod:`.teacher` -- the base model reading the records answers every question (batched);
   ungrounded answers drop their question;
4. here -- training examples: each trained question with the teacher's answer and *no* context
   (the student learns to answer without reading), and a share of them again *with* the rag
   context (the question's records among distractors), so the module does not damage the
   model's reading and ``hybrid`` stays at least as good as ``rag``; probes: the held-out
   questions with the teacher's answers, for the gate (:func:`.engine.gate`).

Two losses (``consolidation.distill_loss``): ``"sequence"`` -- the teacher's answer is the label;
``"logits"`` -- at every answer token the student matches the teacher's top-k next-token
distribution, taken with the records in context (:func:`.trainer.teacher_distributions`), as
Knowledge Modules' deep context distillation and Cartridges do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..generation.prompts import build_messages, created_at
from ..types import Record
from .clean import trainable_text
from .data import Probe, qa_pairs, superseded
from .questions import Question, QuestionSet, about, template_questions, writer_questions
from .teacher import Taught, note, teach
from .trainer import Example, teacher_distributions
from .writers import DataWriter

CONTEXT_SHARE = 0.25
"""Share of trained questions that get a second example with the rag context (exactly, rounded;
each record's first question before any record's second). With-context examples are ~150 tokens
against ~55 without, so they are most of the work. Measured on the Lisbon story (2 cores): 1.0
took 251 s to consolidate, 0.5 took 188 s, with the same held-out agreement (0.625), hybrid as
rag (0.875) and 6/6 in lora, hybrid and auto. On the story and two generated personas (seed 0,
91d8dd9): 0.25 trained 25% fewer tokens than 0.5 (47.7k against 64.4k) with the same gate
verdicts (one module committed, two refused for hybrid < rag), the same held-out agreement
(0.625, 0.833, 0.6) and the same answers (0.833 in every mode, as rag before)."""
DISTRACTORS = 2
"""Other records shown beside a question's own in a with-context example."""
LOSSES = ("sequence", "logits")
"""``distill(loss=...)``: the teacher's answer as the label, or its top-k distributions."""
TOP_K = 20
"""Teacher probabilities kept per answer token for the ``"logits"`` loss (as Cartridges)."""


@dataclass
class DistillResult:
    """What the distillation stages made, shaped like :class:`.synth.SynthResult`.

    Attributes:
        examples: training examples (no-context and with-context).
        probes: held-out probes (teacher answers) then QA-shaped records' own pairs.
        held_in: trained questions with their teacher answers (for the report).
        stats: counts per stage, written into the manifest.
    """

    examples: list[Example]
    probes: list[Probe]
    held_in: list[Probe] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def held_out(self) -> list[Probe]:
        return [p for p in self.probes if p.kind == "held_out"]

    def to_dict(self) -> dict[str, Any]:
        return {"examples": len(self.examples), "probes": len(self.probes), **self.stats}


Retriever = Callable[[str], Collection[str]]
"""``question -> ids of the records rag would put in context for it``."""


def collect_questions(
    records: Sequence[Record],
    writer: DataWriter | None,
    seed: int,
    retrieves: Retriever | None = None,
) -> tuple[QuestionSet, dict[str, Any]]:
    """Questions for the trainable records, deduplicated, with counts per source.

    A writer's question is kept only when it is about its record (:func:`.questions.about`)
    and, with ``retrieves``, when rag would retrieve its record for it: the small writer also
    asks off-topic questions ("What's the best way to make a cup of tea?" of "I painted that
    lake sunrise last year"), which the teacher, reading the record anyway, answers from world
    knowledge -- training on those teaches nothing about the records and moves the model (on
    LoCoMo conv-26, first two sessions: 42 of 81 writer questions)."""
    qs = QuestionSet()
    counts: dict[str, Any] = {
        "records": len(records),
        "skipped": 0,
        "superseded": 0,
        "qa": 0,
        "template": 0,
    }
    stale = superseded(records)
    ask_writer: list[tuple[str, str]] = []
    # oldest first: a newer record's value wins a question both records ask
    for rec in sorted(records, key=lambda r: created_at(r.metadata) or 0.0):
        text = trainable_text(rec)  # "" for what is not knowledge (agent turns, ...)
        if not text:
            counts["skipped"] += 1
            continue
        if rec.id in stale:
            counts["superseded"] += 1
            continue
        pairs = qa_pairs(text)
        if pairs is not None:
            qs.add([Question(q, (rec.id,), "qa", answer=a) for q, a in pairs])
            counts["qa"] += len(pairs)
            continue
        found = template_questions(text, rec.id, random.Random(f"{seed}:{rec.id}"))
        counts["template"] += len(found)
        qs.add(found)
        if not found or rec.metadata.get("kind") == "document":
            ask_writer.append((rec.id, text))
    counts["writer"] = 0
    if writer is not None and ask_writer:
        made = writer_questions(writer, ask_writer)
        texts = dict(ask_writer)
        related = [q for q in made if about(q.text, texts[q.record_ids[0]])]
        counts["writer_unrelated"] = len(made) - len(related)
        made = related
        if retrieves is not None:
            on_topic = [q for q in made if set(q.record_ids) & set(retrieves(q.text))]
            counts["writer_off_topic"] = len(made) - len(on_topic)
            made = on_topic
        counts["writer"] = len(made)
        qs.add(made)
    counts["questions"] = len(qs.questions)
    counts["duplicates"] = qs.duplicates
    return qs, counts


def distill(
    records: Sequence[Record],
    gen: Any,
    writer: DataWriter | None,
    system: str,
    *,
    seed: int = 0,
    original: bool = False,
    context_share: float = CONTEXT_SHARE,
    distractors: int = DISTRACTORS,
    loss: str = "sequence",
    retrieves: Retriever | None = None,
) -> DistillResult:
    """Examples and probes for ``records`` by context distillation (see the module doc);
    ``retrieves``: see :func:`collect_questions`."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    t0 = time.perf_counter()
    qs, counts = collect_questions(records, writer, seed, retrieves)
    t1 = time.perf_counter()
    by_id = {r.id: r for r in records}
    taught = teach(gen, qs.questions, by_id, system)
    t2 = time.perf_counter()
    kept = [t for t in taught if t.grounded]
    # the trained questions the teacher answered (QA records' own pairs are trained as written)
    trained = [
        i for i, t in enumerate(kept) if not t.question.held_out and t.question.source != "qa"
    ]
    soft: dict[int, Any] = {}
    if loss == "logits":  # the teacher's distributions, reading the records, once per question
        readings = [_reading(kept[i], system) for i in trained]
        soft = dict(zip(trained, teacher_distributions(gen, readings, k=TOP_K), strict=True))
    t3 = time.perf_counter()
    rng = random.Random(seed)
    texts = {r.id: trainable_text(r) for r in records}
    pool = [r for r in records if texts[r.id]]
    examples: list[Example] = []
    held_in: list[Probe] = []
    probes: list[Probe] = []
    with_context = 0
    in_context = _with_context_choice(kept, trained, context_share, rng)
    for i, t in enumerate(kept):
        q = t.question
        rid = q.record_ids[0]
        if q.held_out:
            probes.append(Probe(q.text, t.answer, rid, "held_out", q.value, q.record_ids))
            continue
        example = Example.qa(q.text, t.answer, system=system)
        examples.append(replace(example, soft=soft.get(i, ())))
        held_in.append(Probe(q.text, t.answer, rid, kind="held_in"))
        if q.source == "qa":
            probes.append(Probe(q.text, t.answer, rid, kind="qa"))
        if i in in_context:
            examples.append(_with_context(t, pool, system, rng, distractors, soft.get(i, ())))
            with_context += 1
    covered = {rid for t in kept for rid in t.question.record_ids}
    uncovered = [r for r in pool if r.id not in covered]
    if original:
        examples.extend(Example.text(texts[r.id]) for r in uncovered)
    counts.update(
        {
            "teacher_answers": sum(t.question.answer is None for t in taught),
            "dropped_ungrounded": sum(
                not t.grounded and not t.misread and not t.empty for t in taught
            ),
            "dropped_uninformative": sum(t.empty and not t.misread for t in taught),
            "dropped_misread": sum(t.misread for t in taught),
            "trained_questions": len(held_in),
            "held_out_probes": sum(p.kind == "held_out" for p in probes),
            "with_context_examples": with_context,
            "uncovered_records": len(uncovered),
            "original_examples": len(uncovered) if original else 0,
            "seconds_questions": round(t1 - t0, 3),
            "seconds_teacher": round(t2 - t1, 3),
            "loss": loss,
            "seconds_teacher_logits": round(t3 - t2, 3),
        }
    )
    return DistillResult(examples, probes, held_in, counts)


def _with_context_choice(
    kept: Sequence[Taught], trained: Sequence[int], share: float, rng: random.Random
) -> set[int]:
    """Which of the ``trained`` questions (indices into ``kept``) also get a with-context
    example: ``share`` of them, rounded, the first question of each record before any record's
    second, so every record is read in context at least once when the share allows. (A coin
    flip per question drew 0 of 17 at 0.25 on the Lisbon story, and the gate then refused the
    module: hybrid 75% < rag 88%.)"""
    want = round(share * len(trained))
    firsts: dict[str, int] = {}
    for i in trained:
        firsts.setdefault(kept[i].question.record_ids[0], i)
    lead = list(firsts.values())
    leading = set(lead)
    rest = [i for i in trained if i not in leading]
    rng.shuffle(lead)
    rng.shuffle(rest)
    return set((lead + rest)[:want])


def _reading(t: Taught, system: str) -> Example:
    """The teacher's own prompt (the question's records as notes) with its answer."""
    messages = build_messages(system, t.question.text, t.context)
    return Example(t.answer, tuple((m["role"], m["content"]) for m in messages))


def _with_context(  # noqa: PLR0917
    t: Taught,
    pool: Sequence[Record],
    system: str,
    rng: random.Random,
    distractors: int,
    soft: Any = (),
) -> Example:
    """The question with its records among ``distractors`` others, as rag would show them."""
    own = set(t.question.record_ids)
    others = [r for r in pool if r.id not in own]
    picked = rng.sample(others, min(distractors, len(others)))
    notes = [note(r) for r in pool if r.id in own] + [note(r) for r in picked]
    rng.shuffle(notes)
    messages = build_messages(system, t.question.text, notes)
    prompt = tuple((m["role"], m["content"]) for m in messages)
    return Example(answer=t.answer, prompt=prompt, soft=soft)


__all__ = [
    "CONTEXT_SHARE",
    "DISTRACTORS",
    "LOSSES",
    "TOP_K",
    "DistillResult",
    "Retriever",
    "collect_questions",
    "distill",
]
