"""Namespace names -> safe identifiers.

Any Unicode string is a valid namespace. It is never used raw in a path or a collection name:
:func:`encode_namespace` turns it into ``lm-<slug>-<sha256 prefix>``, where the slug is a
lowercase ASCII hint for humans and the 128-bit hash makes names distinct (``"A"``/``"a"``,
``"../x"``/``"..x"`` and two 10 kB names sharing a prefix all differ). The result is a valid Chroma
collection name and a valid single path component on every common filesystem.
"""

from __future__ import annotations

import hashlib
import json
import re

from ..errors import InvalidInputError, InvalidTypeError

MAX_NAMESPACE_CHARS = 4096
PREFIX = "lm"
_SLUG_RE = re.compile(r"[^a-z0-9]+")


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if usable, else raise a typed error saying why."""
    if not isinstance(namespace, str):
        raise InvalidTypeError(
            f"namespace must be a str, got {type(namespace).__name__}: pass e.g. 'user-42'"
        )
    if not namespace:
        raise InvalidInputError("namespace must be a non-empty string, got ''")
    if len(namespace) > MAX_NAMESPACE_CHARS:
        raise InvalidInputError(
            f"namespace is {len(namespace)} characters; the limit is {MAX_NAMESPACE_CHARS}. "
            "Use a shorter key (e.g. a user id or a hash)."
        )
    return namespace


def encode_namespace(namespace: str, prefix: str = PREFIX) -> str:
    """A collision-free, path-safe identifier for ``namespace``.

    Example:
        >>> encode_namespace("user-42")
        'lm-user-42-...'  # doctest: +SKIP
    """
    validate_namespace(namespace)
    raw = namespace.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(raw).hexdigest()[:32]
    slug = _SLUG_RE.sub("-", namespace.lower()).strip("-")[:40].strip("-") or "ns"
    return f"{prefix}-{slug}-{digest}"


def pack_namespace(namespace: str) -> str:
    """The namespace as pure ASCII (JSON string), safe to store in any backend's metadata.

    JSON cannot keep two adjacent lone surrogates apart (``"\\ud800\\udfff"`` reads back as one
    astral character), so a name that would not survive it is stored as ``hex:`` + its
    UTF-8 (surrogatepass) bytes instead; a JSON string always starts with ``"``.
    """
    packed = json.dumps(namespace, ensure_ascii=True)
    if json.loads(packed) == namespace:
        return packed
    return _HEX + namespace.encode("utf-8", "surrogatepass").hex()


_HEX = "hex:"


def unpack_namespace(packed: str) -> str:
    if packed.startswith(_HEX):
        return bytes.fromhex(packed[len(_HEX) :]).decode("utf-8", "surrogatepass")
    value = json.loads(packed)
    if not isinstance(value, str):  # pragma: no cover - only our own writes land here
        raise ValueError(f"not a packed namespace: {packed!r}")
    return value
