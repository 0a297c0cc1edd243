"""synthesize(): mixtures, the writer-free path, and grounding, driven by langchain-core's fake
chat model through LangChainWriter (scripted completions, one per prompt, in stage order)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from lora_memory_plugin.consolidation.data import Probe, build_examples
from lora_memory_plugin.consolidation.synth import (
    Mixture,
    answer_grounded,
    parse_lines,
    parse_passage,
    parse_qa_pairs,
    split_sentences,
    strip_injected,
    synthesize,
    text_grounded,
)
from lora_memory_plugin.consolidation.trainer import Example
from lora_memory_plugin.consolidation.writers import LangChainWriter
from lora_memory_plugin.errors import InvalidInputError, ModelError
from lora_memory_plugin.types import Record

SYSTEM = "You are a memory."


class Recording:
    """A DataWriter around LangChainWriter(FakeListChatModel) that keeps every prompt."""

    def __init__(self, responses: Sequence[str]) -> None:
        model = FakeListChatModel(responses=list(responses) or ["(unused)"])
        self.inner = LangChainWriter(model, max_concurrency=1)  # scripted order = prompt order
        self.name = self.inner.name
        self.calls: list[list[list[dict[str, str]]]] = []

    def write(self, prompts: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        self.calls.append([list(p) for p in prompts])
        return self.inner.write(prompts, max_new_tokens)

    @property
    def items(self) -> list[str]:
        """The last user message of every prompt sent, in order."""
        return [p[-1]["content"] for call in self.calls for p in call]


def turn(rid: str, text: str, role: str = "user", session: str = "s1", at: float = 0.0) -> Record:
    meta = {"kind": "turn", "role": role, "session_id": session, "created_at": at}
    return Record(rid, text, meta)


def doc(rid: str, text: str) -> Record:
    return Record(rid, text, {"kind": "document", "source": "notes.txt", "chunk_index": 0})


def qa_of(examples: list[Example]) -> list[tuple[str, str]]:
    return [(e.prompt[-1][1], e.answer) for e in examples if e.kind == "qa"]


def texts_of(examples: list[Example]) -> list[str]:
    return [e.answer for e in examples if e.kind == "text"]


# --- mixtures ------------------------------------------------------------------------------


def test_mixture_parsing_is_canonical_and_validated() -> None:
    assert Mixture.parse("all").strategies == ("qa", "summary", "rewrite", "original")
    assert Mixture.parse("original+QA").strategies == ("qa", "original")
    assert str(Mixture.parse(["summary", "qa"])) == "qa+summary"
    assert "qa" in Mixture.parse("qa") and "summary" not in Mixture.parse("qa")
    m = Mixture.parse("qa")
    assert Mixture.parse(m) is m
    for bad in ("qa+poem", "", "qa+qa"):
        with pytest.raises(InvalidInputError):
            Mixture.parse(bad)
    with pytest.raises(ValueError, match="unknown strategy 'poem'"):  # also a ValueError
        Mixture(("qa", "poem"))
    with pytest.raises(InvalidInputError):
        Mixture(())


# --- writer=None: today's build_examples ---------------------------------------------------

MIXED = [
    turn("t1", "Question: What is the code of box 1? Answer: 4471"),
    turn("t2", "My locker code is 4471."),
    turn("t3", "Noted, your locker code is 4471.", role="assistant"),
    doc("d1", "The Rhine flows 1,230 kilometres to the North Sea."),
]


def test_without_writer_reproduces_build_examples() -> None:
    result = synthesize(MIXED, None, "all", SYSTEM)
    assert (result.examples, result.probes) == build_examples(MIXED, SYSTEM)
    assert result.probes == [Probe("What is the code of box 1?", "4471", "t1")]
    assert result.stats["qa"] == {"made": 1, "kept": 1, "dropped_ungrounded": 0}
    assert result.stats["original"]["kept"] == 2  # the user turn and the document
    assert all("Noted" not in ex.answer for ex in result.examples)  # assistant turn: never
    assert result.to_dict()["examples"] == 3


def test_qa_shaped_records_need_no_writer_call() -> None:
    writer = Recording([])
    result = synthesize(MIXED[:1], writer, "all", SYSTEM)
    assert writer.calls == []
    assert result.examples == [Example.qa("What is the code of box 1?", "4471", system=SYSTEM)]
    assert result.probes == [Probe("What is the code of box 1?", "4471", "t1")]


# --- conversation turns --------------------------------------------------------------------

TURNS = [
    turn("u1", "My locker code is 4471.", at=1),
    turn("a1", "Great, I'll remember your locker code 4471.", role="assistant", at=2),
    turn("u2", "I moved to Lyon last spring; my new landlord is Mr. Okafor.", at=3),
    turn("x1", "tool output: weather is sunny", role="tool", at=4),
]
FACTS_U1 = "- The user's locker code is 4471.\n- The user's locker code is 4472."
FACTS_U2 = (
    "Facts:\n- The user lives in Lyon.\n- The user's landlord is Mr. Smith.\n"
    "- The user's landlord is Mr. Okafor.\nUser said: I like tea.\n- The user likes tea."
)
QA_FACTS = [
    "Q: What is the user's locker code?\nA: 4471.",  # grounded ("." trimmed)
    "Sure! Q: Where does the user live?\nA: Lyon",  # grounded, preamble ignored
    "Q: Who is the user's landlord?\nA: The user's landlord is Mr. Okafor.",  # not verbatim
]


def test_user_turns_become_grounded_facts_then_qa() -> None:
    writer = Recording([FACTS_U1, FACTS_U2, *QA_FACTS])
    result = synthesize(TURNS, writer, "qa", SYSTEM)
    # facts stage: one prompt per user turn; assistant and tool turns never reach the writer
    assert len(writer.calls) == 2 and len(writer.calls[0]) == 2
    assert all("remember" not in i and "sunny" not in i for i in writer.items)
    assert writer.items[:2][0].endswith("My locker code is 4471.")
    # 4472 and Mr. Smith are not in what the user said; the ramble after "User said:" is cut
    assert result.stats["facts"] == {"made": 5, "kept": 3, "dropped_ungrounded": 2}
    assert writer.items[2] == (
        "Write one question the fact answers, and its short answer copied from the fact.\n\n"
        "Fact: The user's locker code is 4471."
    )
    assert [i.rsplit("Fact: ", 1)[1] for i in writer.items[2:]] == [
        "The user's locker code is 4471.",
        "The user lives in Lyon.",
        "The user's landlord is Mr. Okafor.",
    ]
    assert qa_of(result.examples) == [
        ("What is the user's locker code?", "4471"),
        ("What is my locker code?", "4471"),  # how the user will ask the agent
        ("Where does the user live?", "Lyon"),
    ]
    assert result.stats["qa"] == {"made": 3, "kept": 2, "dropped_ungrounded": 1}
    assert result.probes == [
        Probe("What is the user's locker code?", "4471", "u1"),
        Probe("Where does the user live?", "Lyon", "u2"),
    ]
    assert all(e.prompt[0] == ("system", SYSTEM) for e in result.examples)
    assert result.skipped_turns == 2 and result.fallbacks == 0


def test_rewrite_and_original_of_turns_skip_assistant_turns() -> None:
    writer = Recording([FACTS_U1, FACTS_U2])
    result = synthesize(TURNS, writer, "rewrite+original", SYSTEM)
    assert len(writer.calls) == 1  # facts only: no QA stage in this mixture
    assert texts_of(result.examples) == [
        "The user's locker code is 4471.",
        "My locker code is 4471.",
        "The user lives in Lyon. The user's landlord is Mr. Okafor.",
        "I moved to Lyon last spring; my new landlord is Mr. Okafor.",
    ]
    assert result.probes == []
    assert result.stats["rewrite"]["kept"] == 2 and result.stats["original"]["kept"] == 2


def test_injected_notes_and_memory_tags_are_not_facts() -> None:
    rag_turn = (
        "Notes:\n- (user) My locker code is 4471.\n- (assistant) Noted.\n\n"
        "Question: I changed it <memory>old code 4471</memory> to 9302, right?\nAnswer:"
    )
    writer = Recording(["- The user's locker code is 4471.\n- The user's locker code is 9302."])
    result = synthesize([turn("u9", rag_turn)], writer, "rewrite", SYSTEM)
    sent = writer.items[0]
    assert sent.endswith("User said: I changed it to 9302, right?")
    assert "Notes" not in sent and "4471" not in sent
    assert texts_of(result.examples) == ["The user's locker code is 9302."]
    assert result.stats["facts"]["dropped_ungrounded"] == 1


def test_short_turn_gets_the_previous_turn_but_values_must_be_the_users() -> None:
    session = [
        turn("q", "What is your dog's name and where was he born?", role="assistant", at=1),
        turn("a", "Rex.", at=2),
        turn("b", "And a cat.", at=3),
        turn("other", "Unrelated session turn.", session="s2", at=0),
    ]
    facts = "- The user's dog is named Rex.\n- The user's dog was born in Oslo."
    writer = Recording([facts, "", ""])
    result = synthesize(session, writer, "rewrite", SYSTEM)
    assert writer.items[0].endswith(
        "User said: Rex.\n(They were answering: What is your dog's name and where was he born?)"
    )
    assert writer.items[1].endswith("User said: And a cat.")  # after the user's own turn
    assert "answering" not in writer.items[2]  # first turn of its session: no context
    assert texts_of(result.examples) == [
        "The user's dog is named Rex.",
        "And a cat.",  # no fact: trained as its text
        "Unrelated session turn.",
    ]
    assert result.fallbacks == 2


# --- documents -----------------------------------------------------------------------------

RHINE = (
    "The Rhine flows 1,230 kilometres from the Swiss Alps to the North Sea. "
    "It passes Basel, Strasbourg and Cologne."
)
DOC_QA = [  # one completion per sentence
    "Q: How long is the Rhine?\nA: 1,230 kilometres\n"
    "Q: Where does the Rhine end?\nA: The North Sea.\n"
    "Q: How long is the Rhine?\nA: 1,230 kilometres\n"  # repeated: counted once
    "Q: What is the Rhine's length?\nA: 1,300 km",  # a number the text lacks
    "Q: Which city does the Rhine pass first?\nA: Basel\n"
    "Q: When did Napoleon cross the Rhine?\nA: Basel\n"  # the question invents a name
    "Q: Where does it start?\nA: the Alps",  # not verbatim: "Swiss Alps" is
]
SUMMARY = "Summary: The Rhine runs 1,230 kilometres from the Swiss Alps to the North Sea."
REWRITE = "From the Swiss Alps the Rhine flows past Basel, Strasbourg and Bonn to the North Sea."


def test_documents_get_grounded_qa_summary_rewrite_and_original() -> None:
    writer = Recording([*DOC_QA, SUMMARY, REWRITE])
    result = synthesize([doc("d1", RHINE)], writer, "all", SYSTEM)
    assert [len(c) for c in writer.calls] == [2, 1, 1]  # qa per sentence, summary, rewrite
    assert [i.split("\n\n")[1] for i in writer.items] == [
        "Sentence: The Rhine flows 1,230 kilometres from the Swiss Alps to the North Sea.",
        "Sentence: It passes Basel, Strasbourg and Cologne.",
        f"Text: {RHINE}",
        f"Text: {RHINE}",
    ]
    assert [i.split("\n\n")[0] for i in writer.items] == [
        "Write questions the sentence answers, each with a short answer copied from the sentence.",
        "Write questions the sentence answers, each with a short answer copied from the sentence.",
        "Summarise the text in one sentence. Keep names and numbers exactly.",
        "Rewrite the text in other words. Keep every fact, name and number exactly.",
    ]
    assert qa_of(result.examples) == [
        ("How long is the Rhine?", "1,230 kilometres"),
        ("Where does the Rhine end?", "The North Sea"),
        ("Which city does the Rhine pass first?", "Basel"),
    ]
    assert [p.record_id for p in result.probes] == ["d1"] * 3
    assert result.stats["qa"] == {"made": 6, "kept": 3, "dropped_ungrounded": 3}
    # summary kept (label stripped); the rewrite brought "Bonn": dropped; original = chunk
    assert [e.kind for e in result.examples] == ["qa", "qa", "qa", "text", "text"]
    assert texts_of(result.examples) == [SUMMARY.removeprefix("Summary: "), RHINE]
    assert result.stats["summary"] == {"made": 1, "kept": 1, "dropped_ungrounded": 0}
    assert result.stats["rewrite"] == {"made": 1, "kept": 0, "dropped_ungrounded": 1}


def test_a_record_left_with_nothing_trains_as_its_text() -> None:
    writer = Recording(["Q: What is the Danube?\nA: A river in Vienna", "no questions"])
    result = synthesize([doc("d1", RHINE)], writer, "qa", SYSTEM)
    assert result.examples == [Example.text(RHINE)] and result.probes == []
    assert result.fallbacks == 1 and result.stats["original"]["kept"] == 1


def test_synthesis_is_deterministic_and_follows_record_order() -> None:
    records = [doc("d1", RHINE), turn("u1", "My locker code is 4471.")]
    # stage order: facts of turns, QA of facts, QA of document sentences
    script = [
        "- The user's code is 4471.",
        "Q: What code?\nA: 4471",
        "Q: How long is the Rhine?\nA: 1,230 kilometres",
        "",  # the second sentence of RHINE
    ]
    runs = [synthesize(records, Recording(script), "qa", SYSTEM) for _ in range(2)]
    assert runs[0].examples == runs[1].examples and runs[0].probes == runs[1].probes
    assert [p.record_id for p in runs[0].probes] == ["d1", "u1"]


def test_a_writer_returning_the_wrong_count_is_an_error() -> None:
    class Short:
        name = "short"

        def write(self, prompts: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
            return []

    with pytest.raises(ModelError, match="returned 0 completions for 1 prompts"):
        synthesize([doc("d1", RHINE)], Short(), "summary", SYSTEM)


# --- grounding, parsing, cleaning ----------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "source", "ok"),
    [
        ("4471.", "My locker code is 4471.", True),
        ("447", "My locker code is 4471.", False),  # numbers match whole
        ("44710", "My locker code is 4471.", False),
        ("LYON", "I moved to  Lyon last spring", True),  # case, spacing
        ("Mr. Okafor", "my landlord is Mr. Okafor.", True),
        ("Okafor", "Mr. Okafor's flat", True),  # possessive
        ("Basel, Strasbourg, and Cologne", "passes Basel, Strasbourg and Cologne.", True),
        ("Basel and Cologne", "passes Basel, Strasbourg and Cologne.", False),
        ("603-556-7631", "Alice: 603-556-7631.", True),
        ("3", "It costs 3.5 euros", False),
        ("last spring;", "I moved to Lyon last spring; my", True),
        ("...", "anything", False),
    ],
)
def test_answer_grounded(answer: str, source: str, ok: bool) -> None:
    assert answer_grounded(answer, source) is ok


SRC = "My locker code is 4471. I moved to Lyon last spring; my new landlord is Mr. Okafor."


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("The user's locker code is 4471.", True),
        ("Okafor's flat is in Lyon.", True),
        ("The user's locker code is 4472.", False),  # new number
        ("The user's landlord is Mr. Smith.", False),  # new name
        ("In May the user moved to Lyon.", False),  # new capitalised token
        ("The user likes pizza.", False),  # shares no content word
    ],
)
def test_text_grounded(text: str, ok: bool) -> None:
    assert text_grounded(text, SRC) is ok


def test_parsers_tolerate_rambling_output() -> None:
    assert parse_qa_pairs(
        "Here you go.\nQuestion 1: Who?\nAnswer 1: Mia\nQ: Orphan?\nQ: x? A: y"
    ) == [
        ("Who?", "Mia"),
        ("x?", "y"),
    ]
    assert parse_lines("Facts:\n1. The user has a cat.\n* ok\n2) The user is 40.\nText: no") == [
        "The user has a cat.",
        "The user is 40.",
    ]
    assert parse_passage("Rewrite: A  b c.\nd e.\nQ: next") == "A b c. d e."


def test_strip_injected() -> None:
    assert strip_injected("I live in Lyon.") == "I live in Lyon."
    assert strip_injected("a <MEMORY>x</memory> b <memory>unclosed") == "a b"
    assert strip_injected("Notes:\n- n1\n- n2\n\nQuestion: q?\nAnswer:") == "q?"
    assert strip_injected("Notes:\n- only notes") == ""
    assert strip_injected("Notes: buy milk") == "Notes: buy milk"  # not our block


def test_split_sentences_keeps_titles_and_tiny_pieces_together() -> None:
    text = "My landlord is Mr. Okafor. He is nice. I pay 3.5 euros a day! Really?  Yes, it is."
    assert split_sentences(text) == [
        "My landlord is Mr. Okafor.",
        "He is nice. I pay 3.5 euros a day!",
        "Really? Yes, it is.",
    ]


def test_faq_chunk_trains_each_pair_with_its_own_answer():
    """An FAQ document chunk holds several Q/A pairs: each question keeps its own answer (split
    into sentences, the next question would pair with the previous answer)."""
    from lora_memory_plugin.consolidation.data import build_examples
    from lora_memory_plugin.consolidation.synth import synthesize
    from lora_memory_plugin.types import Record

    text = "Q: What is the door code? A: 5150 Q: Where are lost badges replaced? A: Room B-104"
    rec = Record("d-1", text, {"kind": "document", "source": "faq.md"})
    synth = synthesize([rec], None, "qa", "sys")
    for examples, probes in (build_examples([rec], "sys"), (synth.examples, synth.probes)):
        assert [(p.question, p.answer) for p in probes] == [
            ("What is the door code?", "5150"),
            ("Where are lost badges replaced?", "Room B-104"),
        ]
        assert len(examples) == 2


def test_a_newer_answer_to_the_same_question_supersedes_the_older():
    """Knowledge updates: two QA records ask the same question; only the newest is trained and
    probed (on both paths), whatever their order in the batch."""
    from lora_memory_plugin.consolidation.data import superseded
    from lora_memory_plugin.consolidation.synth import synthesize

    old = turn("r-old", "Question: Where does Ana work? Answer: Lyon", at=10.0)
    new = turn("r-new", "Question: where does ana work Answer: Porto", at=20.0)
    other = turn("r-other", "Question: Where does Bo work? Answer: Graz", at=5.0)
    records = [new, other, old]
    assert superseded(records) == {"r-old"}
    for mixture in (None, "qa+original"):
        if mixture is None:
            _, probes = build_examples(records, SYSTEM)
        else:
            probes = synthesize(records, Recording([]), mixture, SYSTEM).probes
        assert {(p.record_id, p.answer) for p in probes} == {
            ("r-new", "Porto"),
            ("r-other", "Graz"),
        }
    tie = [turn("a", "Question: Q1? Answer: x"), turn("b", "Question: Q1? Answer: y")]
    assert superseded(tie) == {"a"}  # same created_at: the later record wins
