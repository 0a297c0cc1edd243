"""OpenAI-compatible routes: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``model`` names the namespace (the key must be granted it), so the ``openai`` client and
LangChain's ``ChatOpenAI(base_url=".../v1", model=NAMESPACE)`` work as they are. The answer is
``ask`` on the last user message in ``auto`` mode (or the ``mode`` an extra body field names),
micro-batched with every other question; ``lora_memory`` in the response says which mode and
modules answered and what was retrieved. With ``stream: true`` the answer comes back as
server-sent ``chat.completion.chunk`` events; it is generated whole first (the model does not
stream tokens yet), then sent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import errors
from ..integration import message_text
from ..types import Answer
from .auth import Grantee, check_namespace
from .http import provenance


def add_openai_routes(app: FastAPI) -> None:
    """Add ``/v1/models`` and ``/v1/chat/completions`` to the service app (flat routes, so the
    route table the auth test walks lists them)."""
    app.add_api_route("/v1/models", list_models, methods=["GET"], tags=["openai"])
    app.add_api_route(
        "/v1/chat/completions",
        chat_completions,
        methods=["POST"],
        tags=["openai"],
        response_model=None,
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """The fields this service reads; the OpenAI parameters it has no use for (temperature,
    top_p, stop, user, ...) are accepted and ignored, as answers are greedy."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the namespace to answer from")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    mode: Literal["auto", "hybrid", "lora", "rag", "icl", "base"] = Field(
        "auto", description="lora-memory's answering mode (an extra field; default auto)"
    )


def list_models(request: Request, g: Grantee) -> dict[str, Any]:
    """The namespaces this key may use, as OpenAI models."""
    mem = request.app.state.memory
    data = [
        {"id": ns, "object": "model", "created": 0, "owned_by": "lora-memory"}
        for ns in mem.namespaces()
        if g.allows(ns)
    ]
    return {"object": "list", "data": data}


async def chat_completions(
    request: Request, g: Grantee, body: ChatCompletionIn
) -> dict[str, Any] | StreamingResponse:
    """Answer the last user message from the namespace ``model`` names."""
    ns = check_namespace(g, body.model)
    if body.n != 1:
        raise errors.InvalidInputError(f"n must be 1 (one answer per request), got {body.n}")
    question = _last_user_text(body.messages)
    max_new = body.max_completion_tokens or body.max_tokens
    answer = await request.app.state.batcher.ask(ns, question, body.mode, None, max_new)
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream(cid, created, ns, answer, include_usage=usage)
        return StreamingResponse(events, media_type="text/event-stream")
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": ns,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(answer),
        "lora_memory": provenance(answer),
    }


def _last_user_text(messages: list[ChatMessage]) -> str:
    for m in reversed(messages):
        if m.role != "user":
            continue
        text = message_text(m.content or "").strip()  # a str, or OpenAI's content parts
        if text:
            return text
    raise errors.InvalidInputError(
        "messages has no user message with text: the answer is to the last user message"
    )


def _usage(a: Answer) -> dict[str, int]:
    prompt = max(a.context_tokens, 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": a.new_tokens,
        "total_tokens": prompt + a.new_tokens,
    }


def _stream(cid: str, created: int, model: str, a: Answer, *, include_usage: bool) -> Iterator[str]:
    def event(**fields: Any) -> str:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            **fields,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return event(choices=[choice], **extra)

    yield chunk({"role": "assistant", "content": ""}, lora_memory=provenance(a))
    words = a.text.split(" ")
    for i, w in enumerate(words):
        yield chunk({"content": w if i == 0 else " " + w})
    yield chunk({}, "stop")
    if include_usage:
        yield event(choices=[], usage=_usage(a))
    yield "data: [DONE]\n\n"
