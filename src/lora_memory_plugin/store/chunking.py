"""Token-aware document chunking with overlap.

Chunks are cut on the embedder's own tokens (so every chunk fits the encoder's window), end on a
sentence or line boundary when one lies in the last half of the window, and share ``overlap``
tokens with their neighbour so a fact that straddles a cut is still whole in one chunk. Chunk text
is sliced from the original string (offsets), never rebuilt from tokens, so nothing is normalised
away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SENTENCE_END = (".", "!", "?", "\n", ";", ":")


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int
    start_char: int
    end_char: int
    tokens: int


def chunk_text(
    text: str, tokenizer: Any, chunk_tokens: int = 200, overlap: int = 32
) -> list[Chunk]:
    """Split ``text`` into overlapping chunks of at most ``chunk_tokens`` tokens.

    Args:
        text: the document.
        tokenizer: a ``tokenizers.Tokenizer`` (truncation is ignored: a copy without it is used).
        chunk_tokens: the most tokens in a chunk.
        overlap: tokens repeated at the start of the next chunk.
    """
    if overlap >= chunk_tokens:
        raise ValueError(f"overlap ({overlap}) must be < chunk_tokens ({chunk_tokens})")
    offsets = _token_offsets(text, tokenizer)
    if not offsets:
        return []
    chunks: list[Chunk] = []
    n = len(offsets)
    i = 0
    while i < n:
        j = min(i + chunk_tokens, n)
        if j < n:
            j = _sentence_cut(text, offsets, i, j)
        start, end = offsets[i][0], offsets[j - 1][1]
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            chunks.append(
                Chunk(stripped, len(chunks), start + lead, start + lead + len(stripped), j - i)
            )
        if j >= n:
            break
        i = max(j - overlap, i + 1)
    return chunks


def _token_offsets(text: str, tokenizer: Any) -> list[tuple[int, int]]:
    from tokenizers import Tokenizer  # noqa: PLC0415 (tokenizers on first use)

    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    enc = tok.encode(text, add_special_tokens=False)
    return [(s, e) for s, e in enc.offsets if e > s]


def _sentence_cut(text: str, offsets: list[tuple[int, int]], i: int, j: int) -> int:
    """The best end (exclusive token index) in [i + half window, j]: after a sentence end."""
    lo = i + max(1, (j - i) // 2)
    for k in range(j, lo, -1):
        end = offsets[k - 1][1]
        if text[end - 1 : end] in _SENTENCE_END or text[end : end + 1] == "\n":
            return k
    return j
