"""Request bodies of the REST app (pydantic): unknown fields are refused, types are checked
here, and the store checks values (lengths, ranges, filters) as it does for Python callers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TurnIn(_Body):
    content: str
    role: str = "user"
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: float | None = None


class TurnsIn(_Body):
    turns: list[TurnIn] = Field(min_length=1)


class DocumentIn(_Body):
    text: str
    source: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: float | None = None


class DeleteIn(_Body):
    ids: list[str]


class MetadataIn(_Body):
    ids: list[str]
    metadata: dict[str, Any]


class CountIn(_Body):
    kind: str | None = None
    session_id: str | None = None
    status: str | None = None
    where: dict[str, Any] | None = None


class GetIn(CountIn):
    ids: list[str] | None = None
    limit: int | None = None
    offset: int | None = None


class SearchIn(CountIn):
    query: str
    k: int = 5
    role: str | None = None
    since: float | None = None
    until: float | None = None


class AskIn(_Body):
    question: str
    mode: str = "auto"
    k: int | None = None
    max_new_tokens: int | None = None


class AskManyIn(_Body):
    namespaces: list[str] = Field(description="one namespace per question")
    questions: list[str]
    mode: str = "auto"
    k: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = 16


class Message(_Body):
    role: str
    content: str


class ChatIn(_Body):
    messages: list[Message]
    mode: str = "lora"
    max_new_tokens: int | None = None


class GenerateIn(_Body):
    messages: list[Message] = Field(min_length=1)
    max_new_tokens: int = Field(64, ge=1, le=4096)


class QueryIn(_Body):
    query: str
    max_new_tokens: int | None = None


class ConsolidateIn(_Body):
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="consolidation options: min_records, max_minutes, target, rank, lr, ...",
    )
    wait: bool = Field(True, description="false: run it as a background job (202 + the job)")


class ForgetIn(_Body):
    ids: list[str] | None = None
    where: dict[str, Any] | None = None
    missing: bool = False
    rebuild: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
