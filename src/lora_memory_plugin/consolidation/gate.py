"""Stage 6 of consolidation: a gate that can see a bad module.

A module is committed only when, on questions it never trained on (held-out phrasings),

- ``lora`` (the module, no context) agrees with the teacher (the base model reading the records)
  on at least ``held_out_target`` of them (``consolidation.held_out_target``: a small model does
  not carry every fact over to every paraphrase; ``auto`` answers from the module alone only when
  this agreement reached ``target``). Training measures this on the weights it keeps
  (:func:`held_out_evaluator`, ``TrainResult.held_out``) and the gate takes that score; it
  generates the replies itself only when training stopped on a budget after its last
  evaluation. And
- ``hybrid`` (the module + the rag context) agrees with the teacher at least as often as plain
  ``rag`` (the base model + the same retrieved context) does: both asked in one mixed batch,

and QA-shaped records' own pairs (trained as written) are recalled at ``target``.
Otherwise the records stay buffered and the report says which check failed. Agreement is
judged on the answer's value (:func:`.teacher.agrees`), so a paraphrased reply counts and a wrong
value does not, in the reply's first sentence (the teacher's answers are first sentences): a
right value guessed in a later sentence does not count, and generation stops there.

The gate also measures how the module reads: 16 control notes unrelated to any store
(:mod:`.reading`), asked through the base model and through the module in the same mixed batch.
It is reported (``reading``, ``reading_ok``) and ``auto`` uses it -- a module that reads more
than ``READING_SLACK`` notes worse than the base model never answers with retrieved notes in
``auto`` (lora when it answers alone at ``target``, else rag) -- but it does not refuse a
module: it does not separate a module that hurts from one that does not sharply enough (see
``READING_SLACK``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._lru import LRUDict
from ..generation.backend import greedy_rows
from ..generation.prompts import build_messages
from ..types import Hit
from .data import Probe
from .reading import read_right, reading_messages
from .teacher import agrees, first_sentence, past_first_sentence, says_value

GATE_TOKENS = 40
_BASE_READING: LRUDict[tuple[str, str, str], int] = LRUDict(64)
"""(model fingerprint, device, system prompt) -> control notes the bare base model reads right:
the same every time, so each process asks them once (bounded like the other process caches)."""
READING_SLACK = 4
"""Control notes (of 16) a module may read wrong beyond the base model's misses and still add
retrieved notes in ``auto``. Measured on SmolLM2-135M, seed 0 (base model: 15/16): modules that
answered the Lisbon story and two personas right in every mode read 13, 11 (the story with
mixture ``distill``), 10 and 13; the LoCoMo module whose hybrid halved rag's token F1 (0.075
against 0.162; committed only with ``held_out_target`` lowered to 0.5) read 8. PhoneBook's module
(48 numbers, QA recall 100%) read 0: every reply a phone number. A false alarm costs little
(``auto`` answers from rag, which the gate measured hybrid against); a missed one would let
``auto`` answer worse than rag, so the line sits closer to the good modules than to the bad."""


@dataclass(frozen=True)
class GateResult:
    """Scores in [0, 1] (None: nothing to measure) and the verdict."""

    held_out: float | None
    qa: float | None
    rag: float | None
    hybrid: float | None
    passed: bool
    reason: str
    probes: int
    reading: tuple[int, int] | None = None
    """Control notes read right (the module, the base model) of ``len(CONTROL_READING)``."""

    @property
    def reads(self) -> bool | None:
        """The module reads the control notes at most ``READING_SLACK`` worse than the base."""
        return None if self.reading is None else self.reading[0] >= self.reading[1] - READING_SLACK

    def to_dict(self) -> dict[str, Any]:
        return {
            "agreement_held_out": self.held_out,
            "qa_recall": self.qa,
            "rag_agreement": self.rag,
            "hybrid_agreement": self.hybrid,
            "held_out_probes": self.probes,
            "reading": None if self.reading is None else list(self.reading),
            "reading_ok": self.reads,
            "gate": self.reason,
        }


def probe_exact_match(
    gen: Any, adapter: tuple[str, Path], probes: Sequence[Probe], system: str, batch_size: int = 16
) -> float | None:
    """Share of probes whose greedy answer (with the adapter) contains the expected answer.

    Batched (``Generator.chat_many``): the gate asks every probe, one ``generate`` per batch.
    """
    if not probes:
        return None
    messages = [
        [{"role": "system", "content": system}, {"role": "user", "content": p.question}]
        for p in probes
    ]
    budget = max(gen.count_tokens(p.answer) for p in probes) + 8
    outs = gen.chat_many(messages, max_new_tokens=budget, batch_size=batch_size, adapter=adapter)
    hits = sum(
        p.answer.strip().lower() in out.text.strip().lower()
        for p, out in zip(probes, outs, strict=True)
    )
    return hits / len(probes)


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def gate(
    gen: Any,
    adapter: tuple[str, Path],
    probes: Sequence[Probe],
    sources: dict[str, str],
    system: str,
    *,
    target: float,
    held_out_target: float | None = None,
    search: Callable[[str], list[Hit]] | None = None,
    batch_size: int = 16,
    text_only: bool = False,
    held_out_score: float | None = None,
    reading: bool = True,
) -> GateResult:
    """Judge a trained (not yet committed) module; see the module doc.

    Args:
        sources: record id -> text, to find each expected answer's value.
        target: QA recall needed (QA-shaped records' own pairs, trained as written).
        held_out_target: lora's held-out agreement needed (None: ``target``).
        search: the namespace's rag retrieval for a question; None skips the hybrid check.
        text_only: the module trained only records' original text (no question covered them):
            with no probe it passes, and ``auto`` never answers from it (no measurement).
        held_out_score: lora's held-out agreement, already measured on these weights by
            :func:`held_out_evaluator` during training (``TrainResult.held_out``): not
            generated again. None: measured here.
        reading: Measure the module's reading of the control notes (:mod:`.reading`).
    """
    held_out = [p for p in probes if p.kind == "held_out"]
    qa = [p for p in probes if p.kind == "qa"]

    def ask_lora(items: Sequence[Probe]) -> list[str]:
        """The module's replies without context (when training did not measure them)."""
        outs = gen.chat_many(
            [build_messages(system, p.question) for p in items],
            max_new_tokens=GATE_TOKENS,
            batch_size=batch_size,
            adapter=adapter,
            done=past_first_sentence,
        )
        return [o.text for o in outs]

    def ask_both(
        base: Sequence[list[dict[str, str]]], module: Sequence[list[dict[str, str]]]
    ) -> tuple[list[str], list[str]]:
        """The base model's replies to ``base`` and the module's to ``module``, in one
        generation: a decoding step costs about the same for 8 rows as for 16 (the weights are
        read once a step), so both run as one mixed batch (:meth:`Generator.chat_routed`)."""
        outs = gen.chat_routed(
            [*base, *module],
            [None] * len(base) + [adapter] * len(module),
            max_new_tokens=GATE_TOKENS,
            batch_size=2 * batch_size,
            done=past_first_sentence,
            share_prefix=True,
        )
        texts = [o.text for o in outs]
        return texts[: len(base)], texts[len(base) :]

    def agree(items: Sequence[Probe], replies: Sequence[str]) -> list[bool]:
        return agreement(items, replies, sources)

    lora = None
    if held_out:
        lora = held_out_score
        if lora is None:
            lora = _share(agree(held_out, ask_lora(held_out)))
    qa_share = probe_exact_match(gen, adapter, qa, system, batch_size)  # as the other mixtures
    # rag and hybrid on the held-out probes, and the control notes read by the module and (once
    # per model and system prompt in a process) by the base model: one mixed batch
    asked = held_out if search is not None else []
    with_notes = [build_messages(system, p.question, search(p.question)) for p in asked if search]
    controls = reading_messages(system) if reading else []
    fingerprint = getattr(gen, "fingerprint", None)
    key = (fingerprint, str(getattr(gen, "device", "")), system) if fingerprint else None
    base_read = _BASE_READING.get(key) if key else None
    base_prompts = with_notes + (controls if base_read is None else [])
    module_prompts = with_notes + controls
    base_replies, module_replies = (
        ask_both(base_prompts, module_prompts) if module_prompts else ([], [])
    )
    rag = hybrid = read = None
    if asked:
        rag = _share(agree(asked, base_replies[: len(asked)]))
        hybrid = _share(agree(asked, module_replies[: len(asked)]))
    if reading:
        if base_read is None:
            base_read = read_right(base_replies[len(asked) :])
            if key:
                _BASE_READING[key] = base_read
        read = (read_right(module_replies[len(asked) :]), base_read)
    failures = []
    need = target if held_out_target is None else held_out_target
    if lora is not None and lora < need:
        failures.append(
            f"lora agrees with the teacher on {lora:.0%} of held-out probes < {need:.0%}"
        )
    if qa_share is not None and qa_share < target:
        failures.append(f"QA recall {qa_share:.0%} < {target:.0%}")
    if rag is not None and hybrid is not None and hybrid < rag:
        failures.append(f"hybrid {hybrid:.0%} < rag {rag:.0%} on held-out probes")
    if lora is None and qa_share is None and not text_only:
        failures.append("no probe to judge the module by")
    reason = "; ".join(failures) if failures else "passed"
    if not failures and lora is None and qa_share is None:
        reason = "nothing to judge: only records' original text was trained"
    return GateResult(lora, qa_share, rag, hybrid, not failures, reason, len(held_out), read)


def held_out_evaluator(
    probes: Sequence[Probe],
    sources: dict[str, str],
    system: str,
    max_new_tokens: int = GATE_TOKENS,
) -> Callable[[Any, Any], float] | None:
    """For ``train_lora(evaluate=...)``: the model in training's agreement with the teacher on
    the held-out probes (greedy, no context). None when there are no held-out probes."""
    held_out = [p for p in probes if p.kind == "held_out"]
    if not held_out:
        return None

    def evaluate(model: Any, gen: Any) -> float:
        import torch  # noqa: PLC0415 (torch on first use)

        rows = [
            list(
                gen.tokenizer(
                    gen.render(build_messages(system, p.question)), add_special_tokens=False
                )["input_ids"]
            )
            for p in held_out
        ]
        with torch.inference_mode():  # the prompts share the system prompt: prefilled once
            new, _ = greedy_rows(
                model,
                gen.tokenizer,
                rows,
                max_new_tokens,
                gen.device,
                done=past_first_sentence,
                share_prefix=True,
            )
        replies = gen.tokenizer.batch_decode(new, skip_special_tokens=True)
        flags = agreement(held_out, replies, sources)
        return sum(flags) / len(flags)

    return evaluate


def agreement(
    probes: Sequence[Probe], replies: Sequence[str], sources: dict[str, str]
) -> list[bool]:
    """Per probe: does the reply's first sentence give the teacher's value -- the template's
    reading of the statement when there is one ("You have an allergy to peanuts." agrees with
    "I'm allergic to peanuts, so leave them out."), else the teacher's answer's words that come
    from the records the teacher read?"""
    out = []
    for p, r in zip(probes, replies, strict=True):
        said = first_sentence(r)
        if p.value:
            out.append(says_value(said, p.value))
            continue
        ids = p.record_ids or (p.record_id,)
        source = " ".join(sources[i] for i in ids if i in sources) or p.answer
        out.append(agrees(said, p.answer, source, p.question))
    return out


__all__ = ["GateResult", "agreement", "gate", "held_out_evaluator", "probe_exact_match"]
