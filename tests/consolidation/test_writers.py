"""Data writers: LangChainWriter on langchain-core's fake chat models, LocalWriter and
Generator.chat_many on the tiny model (batched greedy output == one prompt at a time)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from lora_memory_plugin.consolidation.writers import (
    DataWriter,
    LangChainWriter,
    LocalWriter,
    message_text,
    to_langchain_messages,
)
from lora_memory_plugin.errors import InvalidInputError, MissingExtraError, ModelError

PROMPTS = [
    [{"role": "system", "content": "s"}, {"role": "user", "content": "one"}],
    [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "shot"},
        {"role": "assistant", "content": "shot answer"},
        {"role": "user", "content": "two"},
    ],
    [{"role": "user", "content": "three"}],
]


class KwargsSpy(FakeListChatModel):
    """A fake chat model that remembers the call kwargs it got (to see bound options)."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 - a pydantic field, copied per instance

    def _call(self, *args: Any, **kwargs: Any) -> str:
        self.seen.append({k: v for k, v in kwargs.items() if k != "run_manager"})
        return super()._call(*args, **kwargs)


# --- LangChainWriter -----------------------------------------------------------------------


def test_langchain_writer_returns_one_completion_per_prompt_in_order() -> None:
    writer = LangChainWriter(FakeListChatModel(responses=["a", " b ", "c"]), max_concurrency=1)
    assert isinstance(writer, DataWriter)
    assert writer.name == "langchain:FakeListChatModel"
    assert writer.write(PROMPTS, 16) == ["a", "b", "c"]
    assert writer.write([], 16) == []


def test_langchain_writer_reads_text_blocks_of_list_content() -> None:
    blocks = [
        {"type": "reasoning", "reasoning": "thinking..."},
        {"type": "text", "text": "Q: Who?\n"},
        {"type": "text", "text": "A: Mia"},
    ]
    model = GenericFakeChatModel(messages=iter([AIMessage(content=blocks)]))
    assert LangChainWriter(model).write(PROMPTS[:1], 16) == ["Q: Who?\nA: Mia"]


def test_message_text_handles_strings_blocks_and_plain_objects() -> None:
    assert message_text(AIMessage(content="  hi ")) == "hi"
    assert message_text(AIMessage(content=["a", {"type": "text", "text": "b"}])) == "ab"

    class Bare:  # a message-like object without .text
        content = ({"type": "text", "text": "x"}, {"type": "image", "url": "u"}, "y")

    assert message_text(Bare()) == "xy"


def test_to_langchain_messages_maps_roles_and_rejects_unknown_ones() -> None:
    out = to_langchain_messages(PROMPTS[1])
    assert [type(m) for m in out] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert [m.content for m in out] == ["s", "shot", "shot answer", "two"]
    with pytest.raises(InvalidInputError, match="roles"):
        to_langchain_messages([{"role": "tool", "content": "x"}])


def test_langchain_writer_binds_the_length_limit_only_when_named() -> None:
    spy = KwargsSpy(responses=["ok"])
    LangChainWriter(spy).write(PROMPTS[:1], 7)
    LangChainWriter(spy, max_tokens_kwarg="max_tokens").write(PROMPTS[:1], 7)
    assert "max_tokens" not in spy.seen[0]
    assert spy.seen[1]["max_tokens"] == 7


def test_langchain_writer_wraps_provider_errors() -> None:
    model = GenericFakeChatModel(messages=iter([]))  # exhausted: every call fails
    with pytest.raises(ModelError, match="writer langchain:GenericFakeChatModel failed"):
        LangChainWriter(model).write(PROMPTS[:1], 8)


def test_langchain_writer_validates_its_arguments() -> None:
    with pytest.raises(InvalidInputError, match="BaseChatModel"):
        LangChainWriter(object())
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        LangChainWriter(FakeListChatModel(responses=["a"]), max_concurrency=0)


def test_missing_langchain_raises_missing_extra_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core.language_models", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'lora-memory-plugin\[langchain\]'"):
        LangChainWriter(object())


def test_importing_the_package_does_not_import_langchain() -> None:
    code = (
        "import sys, lora_memory_plugin, lora_memory_plugin.consolidation.synth, "
        "lora_memory_plugin.consolidation.writers; "
        "print(sorted(m for m in sys.modules if m.startswith('langchain')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- LocalWriter / Generator.chat_many on the tiny model -----------------------------------


@pytest.fixture(scope="module")
def noisy_generator(tiny_model_dir: Any) -> Any:
    """The tiny model with seeded noise on its weights: the plain one greedily repeats a newline
    (empty text after strip), which would make "batched == one at a time" hold trivially."""
    import torch

    from lora_memory_plugin.generation.backend import Generator

    gen = Generator(str(tiny_model_dir), device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in gen.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return gen


CHATS = [
    [{"role": "system", "content": "s"}, {"role": "user", "content": text}]
    for text in (
        "My locker code is 4471.",
        "Lyon",
        "The quick brown fox jumps over the lazy dog. Question: where does Bob live?",
        "a",
        "What is the phone number of Alice?",
    )
]


def test_chat_many_equals_chat_one_at_a_time(noisy_generator: Any, one_thread: None) -> None:
    one = [noisy_generator.chat(m, max_new_tokens=10) for m in CHATS]
    many = noisy_generator.chat_many(CHATS, max_new_tokens=10, batch_size=2)  # padded batches
    assert [g.text for g in many] == [g.text for g in one]
    assert [g.prompt_tokens for g in many] == [g.prompt_tokens for g in one]
    assert [g.new_tokens for g in many] == [g.new_tokens for g in one] == [10] * len(CHATS)
    assert len({g.text for g in many}) == len(CHATS)  # real, distinct outputs
    assert noisy_generator.chat_many([], 10) == []


def test_chat_many_stops_each_row_at_its_own_end_token(
    noisy_generator: Any, one_thread: None
) -> None:
    """Make the first token of one answer an end token: that row stops after 1 token while the
    rest of its batch goes on, exactly as separate chat() calls would."""
    import torch

    gen = noisy_generator
    enc = gen.tokenizer(gen.render(CHATS[1]), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        first = int(gen.model.generate(**enc, max_new_tokens=1, do_sample=False)[0, -1])
    config = gen.model.generation_config
    before = config.eos_token_id
    config.eos_token_id = [gen.tokenizer.eos_token_id, first]
    try:
        one = [gen.chat(m, max_new_tokens=10) for m in CHATS]
        many = gen.chat_many(CHATS, max_new_tokens=10, batch_size=8)
    finally:
        config.eos_token_id = before
    assert many[1].new_tokens == 1
    assert [(g.text, g.new_tokens) for g in many] == [(g.text, g.new_tokens) for g in one]


def test_chat_many_done_ends_a_row_once_its_text_suffices(
    noisy_generator: Any, one_thread: None
) -> None:
    """``done`` ends each row at the first token after which its text satisfies it, while the
    others in the batch go on; what a row keeps is the head of the full generation."""
    full = noisy_generator.chat_many(CHATS, max_new_tokens=10, batch_size=8)
    calls: list[str] = []

    def done(text: str) -> bool:
        calls.append(text)
        return len(text.split()) >= 2

    cut = noisy_generator.chat_many(CHATS, max_new_tokens=10, batch_size=8, done=done)
    assert calls  # the criterion ran
    for c, f in zip(cut, full, strict=True):
        assert f.text.startswith(c.text) and c.new_tokens <= f.new_tokens
        if c.new_tokens < f.new_tokens:  # ended early: the first moment done() held
            assert done(c.text)
    assert any(c.new_tokens < f.new_tokens for c, f in zip(cut, full, strict=True))
    routed = noisy_generator.chat_routed(  # per-row modules (none here): the same rows end
        CHATS, [None] * len(CHATS), max_new_tokens=10, batch_size=8, done=done
    )
    assert [(r.text, r.new_tokens) for r in routed] == [(c.text, c.new_tokens) for c in cut]


def test_local_writer_is_batched_greedy_chat(noisy_generator: Any, one_thread: None) -> None:
    writer = LocalWriter(noisy_generator, batch_size=3)
    assert isinstance(writer, DataWriter)
    assert writer.name == f"local:{noisy_generator.name}"
    out = writer.write(CHATS, 6)
    assert out == [noisy_generator.chat(m, max_new_tokens=6).text for m in CHATS]
    with pytest.raises(InvalidInputError):
        LocalWriter(noisy_generator, batch_size=0)
    with pytest.raises(InvalidInputError):
        noisy_generator.chat_many(CHATS, 6, batch_size=0)


NOTES = [
    "Notes:\n- [2026-01-01] We finally moved to Lisbon last month, still unpacking boxes!\n"
    "- [2026-01-03] My sister Ines visits on March 14th.\n\nQuestion: ",
    "Notes:\n- [2026-02-11] Our corgi Biscuit hates the tram, poor thing.\n\nQuestion: ",
]
SHARED_CHATS = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": n + q},
    ]
    for n, qs in zip(
        NOTES, (("Which city?", "Who visits?", "When?"), ("Dog?", "Which breed?")), strict=False
    )
    for q in qs
] + [CHATS[1]]  # and one prompt that shares nothing


def test_shared_prefix_generation_equals_plain(
    noisy_generator: Any, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts about the same notes prefill them once (one row per prefix, its KV cache copied
    to every row): the answers are those of the plain batch, and the prefill does less work."""
    from lora_memory_plugin.generation import prefix

    plain = noisy_generator.chat_many(SHARED_CHATS, max_new_tokens=8, batch_size=8)
    plans: list[Any] = []
    real = prefix.plan
    monkeypatch.setattr(
        prefix, "plan", lambda rows, **kw: plans.append(real(rows, **kw)) or plans[-1]
    )
    shared = noisy_generator.chat_many(
        SHARED_CHATS, max_new_tokens=8, batch_size=8, share_prefix=True
    )
    [p] = plans
    assert p is not None and len(set(p.group)) == 3  # the two notes blocks, and the loner
    assert [(g.text, g.new_tokens) for g in shared] == [(g.text, g.new_tokens) for g in plain]
    assert any(g.text for g in plain)  # not trivially equal
    done = noisy_generator.chat_many(  # with a stop rule too
        SHARED_CHATS, max_new_tokens=8, batch_size=8, share_prefix=True, done=lambda t: " " in t
    )
    assert all(p.text.startswith(d.text) for p, d in zip(plain, done, strict=True))
