"""How the service answers a failure: the HTTP status of each typed error, and the JSON body
(``{"error": {"type", "message", "status"}}``) every route and the MCP endpoint send."""

from __future__ import annotations

from typing import Any

from .. import errors

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


def error_body(kind: str, message: str, status: int) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "status": status}}
