"""What the service sends back besides the core result types: the HTTP status of each typed
error and the JSON body (``{"error": {"type", "message", "status"}}``) every route and the MCP
endpoint send; the request-body limit; an answer's provenance (which mode and modules
answered, and from what), as the OpenAI route and the MCP ``ask`` tool report it."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import errors
from ..types import Answer

# most specific first: a subclass is matched before its base
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (errors.AuthenticationError, 401),
    (errors.PermissionDeniedError, 403),
    (errors.TextTooLargeError, 413),
    (errors.UnknownNamespaceError, 404),
    (errors.RecordNotFoundError, 404),
    (errors.InvalidInputError, 422),
    (errors.InvalidTypeError, 422),
    (errors.LockHeldError, 409),
    (errors.MissingRecordsError, 409),
    (errors.BackendError, 503),
    (errors.ModelError, 503),
    (errors.ConfigError, 500),
)


def status_for(error: Exception) -> int:
    """The HTTP status of a typed error (500 for anything unexpected)."""
    for cls, code in STATUS:
        if isinstance(error, cls):
            return code
    return 500


def provenance(a: Answer) -> dict[str, Any]:
    """Which mode and modules answered, how sure the router was, the notes and the sources."""
    return {
        "mode": a.mode,
        "requested_mode": a.requested_mode,
        "modules": list(a.modules),
        "confidence": a.confidence,
        "notes": list(a.notes),
        "sources": [{"id": h.id, "text": h.text, "score": h.score} for h in a.sources],
    }


def error_body(kind: str, message: str, status: int) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "status": status}}


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413 and the typed
    ``TextTooLargeError`` body, whether its Content-Length says so up front or its chunks add up
    to it; nothing of it reaches the store."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    # the app sees the client gone and stops reading; what it sends is dropped
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)

    async def _refuse(self, send: Send) -> None:
        message = (
            f"the request body is over {self.limit:,} bytes: send a smaller document, or fewer "
            "turns per request"
        )
        body = json.dumps(error_body("TextTooLargeError", message, 413)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
