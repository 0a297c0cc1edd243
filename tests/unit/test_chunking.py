from __future__ import annotations

import itertools

import pytest

from lora_memory_plugin.store.chunking import chunk_text
from lora_memory_plugin.store.embedder import MiniLMEmbeddingFunction


@pytest.fixture(scope="module")
def tokenizer():
    return MiniLMEmbeddingFunction().tokenizer()


def test_short_text_is_one_chunk(tokenizer):
    chunks = chunk_text("  Hello world.  ", tokenizer, 50, 10)
    assert [(c.text, c.index) for c in chunks] == [("Hello world.", 0)]


def test_chunks_respect_size_overlap_and_cover_text(tokenizer):
    text = " ".join(f"Sentence {i} says the value is {i * 13}." for i in range(200))
    chunks = chunk_text(text, tokenizer, 64, 16)
    assert len(chunks) > 5
    for c in chunks:
        assert c.tokens <= 64
        assert text[c.start_char : c.end_char] == c.text  # sliced from the original
    for a, b in itertools.pairwise(chunks):
        assert b.start_char < a.end_char  # overlap
    assert chunks[0].start_char == 0 and chunks[-1].end_char == len(text)
    # most cuts land after a sentence end
    ends = sum(c.text.endswith(".") for c in chunks[:-1])
    assert ends >= len(chunks) // 2


def test_unicode_and_case_survive(tokenizer):
    text = "Ünïcödé ÉTÉ 東京 " * 100
    chunks = chunk_text(text, tokenizer, 32, 4)
    assert all(text[c.start_char : c.end_char] == c.text for c in chunks)
    assert "東京" in chunks[0].text


def test_overlap_must_be_smaller(tokenizer):
    with pytest.raises(ValueError):
        chunk_text("x", tokenizer, 16, 16)
