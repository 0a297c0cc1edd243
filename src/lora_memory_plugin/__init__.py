"""lora-memory: parametric memory for LLM agents.

Agents write turns and documents into a Chroma buffer that is searchable at once; a consolidation
job turns them into LoRA adapters; answers come from the base model plus the routed adapters,
alone or with retrieved text.

Importing this package is cheap: torch, transformers and chromadb load on first use.

Example:
    >>> from lora_memory_plugin import LoRAMemory
    >>> mem = LoRAMemory.open("./memory")
    >>> mem.add_turn("user-42", "My locker code is 4471.", role="user", session_id="s1")
    >>> mem.search("user-42", "locker code", k=1)[0].text
    'My locker code is 4471.'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._validate import MAX_QUERY_CHARS
from ._version import __version__
from .errors import (
    AuthenticationError,
    BackendError,
    BaseModelMismatchError,
    ConfigError,
    InvalidInputError,
    InvalidTypeError,
    LockHeldError,
    LoraMemoryError,
    MissingExtraError,
    MissingRecordsError,
    ModelError,
    ModelNotAvailableError,
    ModelPullError,
    ModuleIntegrityError,
    PermissionDeniedError,
    RecordNotFoundError,
    StoreError,
    StoreIOError,
    TamperedModelError,
    TextTooLargeError,
    UnknownNamespaceError,
)
from .types import (
    Answer,
    ConsolidationReport,
    ForgetReport,
    Hit,
    NamespaceStatus,
    Recall,
    Record,
    StoreStatus,
)

if TYPE_CHECKING:
    from .memory import LoRAMemory
    from .remote import RemoteMemory


__all__ = [
    "MAX_QUERY_CHARS",
    "Answer",
    "AuthenticationError",
    "BackendError",
    "BaseModelMismatchError",
    "ConfigError",
    "ConsolidationReport",
    "ForgetReport",
    "Hit",
    "InvalidInputError",
    "InvalidTypeError",
    "LoRAMemory",
    "LockHeldError",
    "LoraMemoryError",
    "MissingExtraError",
    "MissingRecordsError",
    "ModelError",
    "ModelNotAvailableError",
    "ModelPullError",
    "ModuleIntegrityError",
    "NamespaceStatus",
    "PermissionDeniedError",
    "Recall",
    "Record",
    "RecordNotFoundError",
    "RemoteMemory",
    "StoreError",
    "StoreIOError",
    "StoreStatus",
    "TamperedModelError",
    "TextTooLargeError",
    "UnknownNamespaceError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "LoRAMemory":
        # a lazy attribute: `import lora_memory_plugin` does not load the facade
        from .memory import LoRAMemory  # noqa: PLC0415

        return LoRAMemory
    if name == "RemoteMemory":  # httpx, loaded on first use
        from .remote import RemoteMemory  # noqa: PLC0415

        return RemoteMemory
    raise AttributeError(f"module 'lora_memory_plugin' has no attribute {name!r}")
