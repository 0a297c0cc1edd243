"""``Answerer``: every way of answering from one store (ask, ask_many, chat, recall, route).

It works over the store's :class:`..ports.Services` and takes namespaces the facade has
already validated; everything else a caller sends (mode, k, limits, questions) is checked here
or in :mod:`.answer` before a model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._validate import MAX_QUERY_CHARS
from ..errors import InvalidInputError, InvalidTypeError
from ..store.records import check_text
from . import answer as _answer

if TYPE_CHECKING:
    from ..ports import Services
    from ..routing import RouteDecision
    from ..types import Answer, Recall


class Answerer:
    """Answers questions from one store's buffer and modules."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def ask(
        self,
        namespace: str,
        question: str,
        mode: str = "auto",
        *,
        k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Answer:
        return _answer.answer(
            self.svc, namespace, question, mode, k=k, max_new_tokens=max_new_tokens
        )

    def ask_many(
        self,
        namespaces: Sequence[str],
        questions: Sequence[str],
        mode: str = "auto",
        *,
        k: int | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 16,
    ) -> list[Answer]:
        """One namespace per question."""
        if isinstance(questions, str):
            raise InvalidTypeError("questions must be a list of str, not one str")
        if len(namespaces) != len(questions):
            raise InvalidInputError(
                f"{len(namespaces)} namespaces for {len(questions)} questions: give one "
                "namespace, or one per question"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        return _answer.answer_many(
            self.svc,
            namespaces,
            questions,
            mode,
            k=k,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )

    def chat(
        self,
        namespace: str,
        messages: Sequence[dict[str, str]],
        *,
        mode: str = "lora",
        max_new_tokens: int | None = None,
    ) -> Answer:
        return _answer.chat(self.svc, namespace, messages, mode, max_new_tokens=max_new_tokens)

    def recall(self, namespace: str, query: str, *, max_new_tokens: int | None = None) -> Recall:
        return _answer.recall(self.svc, namespace, query, max_new_tokens=max_new_tokens)

    def route(self, namespace: str, query: str) -> RouteDecision:
        query = check_text(query, what="query", limit=MAX_QUERY_CHARS)
        return _answer.route_question(self.svc, namespace, query)


__all__ = ["Answerer"]
