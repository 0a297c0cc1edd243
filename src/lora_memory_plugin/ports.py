"""The collaborators the layers below the facade work with, as protocols.

``LoRAMemory`` (memory.py) validates the namespace and delegates to the services. Consolidation
(:mod:`.consolidation`) and answering (:mod:`.generation.answer`) never see the facade: they
receive a :class:`Services` -- in the running library the :class:`._store.Store` that
``LoRAMemory.open`` builds -- and reach the buffer, the routing index, the module registry on
disk and the generator through it. Data flows one way: memory -> consolidation / answering ->
routing -> registry -> store (the Chroma buffer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import StoreConfig
    from .generation.backend import Generator
    from .routing.index import KeyHit
    from .types import Hit, Record


class RecordStore(Protocol):
    """The Chroma buffer of one store (:class:`.store.buffer.Buffer`)."""

    def has_namespace(self, namespace: str) -> bool: ...

    def namespaces(self) -> list[str]: ...

    def update_metadata(
        self, namespace: str, ids: Sequence[str], patch: dict[str, Any]
    ) -> None: ...

    def delete(self, namespace: str, ids: Sequence[str]) -> int: ...

    def search(
        self, namespace: str, query: str, k: int, where: dict[str, Any] | None = None
    ) -> list[Hit]: ...

    def get(
        self,
        namespace: str,
        ids: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Record]: ...

    def get_existing(self, namespace: str, ids: Sequence[str]) -> list[Record]: ...

    def count(self, namespace: str, where: dict[str, Any] | None = None) -> int: ...


class Router(Protocol):
    """The routing-key index (:class:`.routing.index.RoutingIndex`)."""

    def sync(self, namespace: str, manifests: Sequence[Any] | None = None) -> dict[str, int]: ...

    def delete_record_keys(self, namespace: str, record_ids: Sequence[str]) -> None: ...

    def query(self, namespace: str, text: str, k: int) -> list[KeyHit]: ...


class Services(Protocol):
    """Everything a lower layer may use of one open store."""

    @property
    def path(self) -> Path: ...

    @property
    def config(self) -> StoreConfig: ...

    @property
    def chroma_url(self) -> str: ...

    @property
    def buffer(self) -> RecordStore: ...

    @property
    def routing(self) -> Router: ...

    def generator(self) -> Generator:
        """The base-model generator (loaded on first use, shared by the process)."""
        ...

    def generator_if_loaded_forget(self, module_id: str) -> None:
        """Drop ``module_id`` from the generator's resident adapters, if it is loaded."""
        ...

    def update_config(self, **sections: Mapping[str, Any]) -> StoreConfig: ...


__all__ = ["RecordStore", "Router", "Services"]
