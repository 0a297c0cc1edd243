"""What a buffered record is: validation, content hashes, ids and metadata.

Record ids are derived from the content hash, so writing the same knowledge twice into a namespace
stores it once (dedupe), and concurrent writers of the same record cannot create two copies.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError, InvalidTypeError, TextTooLargeError

KINDS = ("turn", "document")
ROLES = ("user", "assistant", "system", "tool")
STATUS_BUFFERED = "buffered"
STATUS_CONSOLIDATED = "consolidated"
MAX_META_STR = 1024
RESERVED_KEYS = frozenset(
    {
        "kind",
        "role",
        "session_id",
        "source",
        "chunk_index",
        "created_at",
        "content_hash",
        "status",
        "module_id",
        "namespace",
    }
)


@dataclass(frozen=True)
class NewRecord:
    """A record about to be written."""

    text: str
    kind: str
    role: str = ""
    session_id: str = ""
    source: str = ""
    chunk_index: int = -1
    created_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # NaN / inf would be stored, then read back as None (Chroma drops them): refuse here.
        if not math.isfinite(self.created_at):
            raise InvalidInputError(
                f"created_at must be finite epoch seconds, got {self.created_at}"
            )

    @property
    def content_hash(self) -> str:
        key = "\x1f".join((self.kind, self.role if self.kind == "turn" else "", self.text))
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def id(self) -> str:
        return f"{self.kind[0]}-{self.content_hash[:32]}"

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "kind": self.kind,
            "role": self.role,
            "session_id": self.session_id,
            "source": self.source,
            "chunk_index": self.chunk_index,
            "created_at": float(self.created_at),
            "content_hash": self.content_hash,
            "status": STATUS_BUFFERED,
            "module_id": "",
        }
        meta.update(self.extra)  # check_extra() keeps user keys off the reserved names
        return meta


def check_text(text: object, *, what: str, limit: int, hint: str = "") -> str:
    """Validate a text argument: a non-blank str under ``limit`` characters."""
    if not isinstance(text, str):
        raise InvalidTypeError(
            f"{what} must be a str, got {type(text).__name__}"
            + (": decode bytes first, e.g. data.decode('utf-8')" if isinstance(text, bytes) else "")
        )
    if not text.strip():
        raise InvalidInputError(f"{what} is empty or only whitespace; pass some text")
    if len(text) > limit:
        raise TextTooLargeError(
            f"{what} is {len(text):,} characters; the limit is {limit:,}."
            + (f" {hint}" if hint else "")
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{what} is not valid Unicode text ({e.reason} at {e.start}); "
            "it holds a lone surrogate, probably from a bad decode"
        ) from e
    return text


def check_label(value: object, *, what: str, allowed: tuple[str, ...] | None = None) -> str:
    """Validate a short metadata label (role, session id, source)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a str, got {type(value).__name__}")
    if len(value) > MAX_META_STR:
        raise InvalidInputError(f"{what} is {len(value)} characters; the limit is {MAX_META_STR}")
    if allowed is not None and value not in allowed:
        raise InvalidInputError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(f"{what} is not valid Unicode text") from e
    return value


def check_extra(extra: object) -> dict[str, Any]:
    """User metadata: flat str/int/float/bool values (what every vector store can filter on)."""
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise InvalidTypeError(f"metadata must be a dict, got {type(extra).__name__}")
    out: dict[str, Any] = {}
    for k, v in extra.items():
        if not isinstance(k, str) or not k or len(k) > 128 or k.startswith("$"):
            raise InvalidInputError(
                f"metadata keys must be non-empty str up to 128 chars, not starting with '$'; "
                f"got {k!r}"
            )
        if k in RESERVED_KEYS:
            raise InvalidInputError(
                f"metadata key {k!r} is reserved (set by lora-memory: "
                f"{', '.join(sorted(RESERVED_KEYS))}); rename it"
            )
        if not isinstance(v, (str, int, float, bool)) or (isinstance(v, str) and len(v) > 4096):
            raise InvalidInputError(
                f"metadata[{k!r}] must be a str (<= 4096 chars), int, float or bool; "
                f"got {type(v).__name__}"
            )
        # What Chroma would silently change or refuse: NaN/inf (read back as None), ints past
        # 64 bits (read back as floats), text that is not valid Unicode (a lone surrogate).
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidInputError(f"metadata[{k!r}] must be a finite number, got {v}")
        if isinstance(v, int) and not isinstance(v, bool) and not _INT64[0] <= v <= _INT64[1]:
            raise InvalidInputError(f"metadata[{k!r}] is outside the 64-bit integer range")
        for part in (k, v) if isinstance(v, str) else (k,):
            try:
                part.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidInputError(
                    f"metadata key or value {part!r:.40} is not valid Unicode text"
                ) from e
        out[k] = v
    return out


_INT64 = (-(2**63), 2**63 - 1)
