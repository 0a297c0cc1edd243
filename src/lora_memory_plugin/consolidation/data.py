"""Buffer records -> training examples.

The paper ranks training formats QA > summary > rewrite > original and finds mixtures best.
This module holds the strategies that need no generator model:

- ``qa``: records that already are question/answer shaped ("Question: ... Answer: ...", as in
  PhoneBook, or an agent's own FAQ entries) train as QA pairs, loss on the answer only, prompted
  exactly as ``ask`` prompts (same system prompt, same chat template);
- ``original``: any other record trains as a plain passage (loss on every token).

Generated strategies (atomic facts from turns, synthetic QA, summaries, rewrites) are in
:mod:`.synth`, which falls back to this module when no writer model is configured.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..types import Record
from .clean import trainable_text
from .trainer import Example


@dataclass(frozen=True)
class Probe:
    """A question with its expected answer, kept in the module manifest.

    ``kind``: ``"held_in"`` (trained as written), ``"qa"`` (a QA-shaped record's own pair,
    trained) or ``"held_out"`` (a phrasing never trained; its answer is the teacher's).
    ``value``: what a reply must say to agree, when a template read it in the statement
    ("peanuts" of "I'm allergic to peanuts, so leave them out"; the teacher's answer says it);
    None: the answer's words that come from the records (:func:`.teacher.agrees`).
    ``record_ids``: every record the teacher read for it, ``record_id`` first (the second
    turn of an update holds the value "Where do I work now?" must give).
    """

    question: str
    answer: str
    record_id: str
    kind: str = "held_in"
    value: str | None = None
    record_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, str]:
        out = {
            "question": self.question,
            "answer": self.answer,
            "record_id": self.record_id,
            "kind": self.kind,
        }
        if self.value is not None:
            out["value"] = self.value
        return out


def parse_qa(text: str) -> tuple[str, str] | None:
    r"""``"Question: Q Answer: A"`` -> ``(Q, A)`` (split at the first "Answer:"; case-insensitive);
    None for any other text, or when Q or A is empty.

    Linear in the text: records are caller input, and the regex this replaces
    (``Question:\s*(.+?)\s*Answer:\s*(.+?)\s*$``) backtracked quadratically over whitespace
    (20,000 blank lines: 12 s).
    """
    head = text.lstrip()
    if head[:9].lower() != "question:":
        return None
    body = head[9:]
    at = body.lower().find("answer:")
    if at < 0:
        return None
    question, answer = body[:at].strip(), body[at + 7 :].strip()
    return (question, answer) if question and answer else None


def _question_key(question: str) -> str:
    return " ".join(question.lower().rstrip(" ?").split())


def superseded(records: Sequence[Record]) -> set[str]:
    """Ids of QA-shaped records whose question a newer record answers again: the latest wins.

    A knowledge update ("Question: Where does Ana work? Answer: Lyon", later "... Answer: Porto")
    must not train both answers into one module. Newer means a later ``created_at``; on a tie, the
    later record in ``records``.
    """
    newest: dict[str, tuple[float, int, str]] = {}
    out: set[str] = set()
    for i, rec in enumerate(records):
        qa = parse_qa(rec.text)
        if qa is None:
            continue
        key = _question_key(qa[0])
        mine = (float(rec.metadata.get("created_at") or 0.0), i, rec.id)
        best = newest.get(key)
        if best is None:
            newest[key] = mine
        elif mine[:2] > best[:2]:
            out.add(best[2])
            newest[key] = mine
        else:
            out.add(rec.id)
    return out


# a question or answer mark as writers and FAQ chunks write them: "Q:", "Answer 2:", ...
QA_MARK = re.compile(r"(?:^|(?<=\s))(Q|Question|A|Answer)\s*(?:\d+\s*)?:\s*", re.I | re.M)


def parse_qa_pairs(output: str) -> list[tuple[str, str]]:
    """``Q: ... / A: ...`` (also ``Question:``/``Answer:``, numbered, one line or two) -> pairs.

    Each answer is cut at its line end; a question without an answer is skipped."""
    marks = list(QA_MARK.finditer(output))
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(output)
        body = output[m.end() : end].strip()
        if m.group(1).lower().startswith("q"):
            question = " ".join(body.split()) or None
        elif question is not None:
            answer = body.splitlines()[0].strip() if body else ""
            if answer and (question, answer) not in pairs:
                pairs.append((question, answer))
            question = None
    return pairs


def qa_pairs(text: str) -> list[tuple[str, str]] | None:
    """A QA-shaped record's pairs (one ``Question: .. Answer: ..``, or an FAQ chunk of several);
    None when the text is not QA-shaped."""
    qa = parse_qa(text)
    if qa is not None:
        return [qa]
    pairs = parse_qa_pairs(text)
    return pairs if len(pairs) > 1 else None


def build_examples(
    records: Sequence[Record], system_prompt: str
) -> tuple[list[Example], list[Probe]]:
    """Training examples and probes for ``records`` (QA-shaped -> qa, others -> original).

    Only what a user said or a document holds is new knowledge: assistant, system and tool turns
    (the agent's own recollections, injected context) are never trained on, and a user turn's
    injected context block is cut first. A QA record that a newer one answers again is left out
    (:func:`superseded`).
    """
    examples: list[Example] = []
    probes: list[Probe] = []
    stale = superseded(records)
    for rec in records:
        if rec.id in stale:
            continue
        text = trainable_text(rec)  # cleaned first: an injected block's QA lines never teach
        pairs = qa_pairs(text) if text else None
        if pairs is not None:
            for question, answer in pairs:
                examples.append(Example.qa(question, answer, system=system_prompt))
                probes.append(Probe(question, answer, rec.id))
            continue
        if text.strip():
            examples.append(Example.text(text))
    return examples, probes
