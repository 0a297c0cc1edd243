"""Who a request is: its API key's grant, and the namespace that grant lets it touch.

The key comes from ``Authorization: Bearer <key>`` (what OpenAI clients send) or ``X-API-Key``;
the namespace from the URL (or, for the OpenAI-compatible routes, the ``model`` field), checked
against the grant's patterns before anything runs. Without a key ring (``--no-auth``) every
request is :data:`ANONYMOUS`, granted every namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam

from .. import errors
from ..store.namespaces import validate_namespace
from .keys import Grant, KeyRing

ANONYMOUS = Grant("anonymous", "no keys (--no-auth)", "", ("*",))


def authenticate(keys: KeyRing | None, headers: Mapping[str, str]) -> Grant:
    """The grant of the key in ``headers`` (``Authorization: Bearer`` or ``X-API-Key``);
    :data:`ANONYMOUS` without a key ring. Reads the key file: call it off the event loop."""
    if keys is None:
        return ANONYMOUS
    key = presented_key(headers)
    if key is None:
        raise errors.AuthenticationError(
            "this service needs an API key: send 'Authorization: Bearer <key>' (create one "
            "with `lora-memory keys create DIR --namespace 'PATTERN'`)"
        )
    found = keys.authenticate(key)
    if found is None:
        raise errors.AuthenticationError("unknown or revoked API key")
    return found


def grant(request: Request) -> Grant:
    """The request's grant (a FastAPI dependency; FastAPI runs it on a worker thread)."""
    return authenticate(request.app.state.keys, request.headers)


Grantee = Annotated[Grant, Depends(grant)]


def check_namespace(g: Grant, namespace: str) -> str:
    """``namespace``, when ``g`` is granted it (PermissionDeniedError otherwise)."""
    if not g.allows(namespace):
        raise errors.PermissionDeniedError(
            f"this API key is not granted namespace {namespace!r} (it may use "
            f"{', '.join(repr(p) for p in g.namespaces)})"
        )
    return validate_namespace(namespace)


def namespace(
    g: Grantee,
    namespace: Annotated[str, PathParam(description="the namespace (tenant) to work on")],
) -> str:
    """The URL's namespace, when the request's key is granted it."""
    return check_namespace(g, namespace)


Namespace = Annotated[str, Depends(namespace)]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of ``Authorization: Bearer <key>``, else of ``X-API-Key``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None
