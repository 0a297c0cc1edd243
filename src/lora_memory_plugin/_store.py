"""What ``LoRAMemory.open`` builds and owns: the config, the buffer, the routing index, the
generator factory and the status of one store (the :class:`.ports.Services` the layers below
the facade use).

It validates nothing a caller sends -- the facade does that -- and it never calls back up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._filelock import file_lock
from .config import (
    CONFIG_NAME,
    DEFAULT_BASE_MODEL,
    DEFAULT_EMBEDDER,
    BufferConfig,
    ModelConfig,
    StoreConfig,
    load_config,
    save_config,
)
from .errors import InvalidInputError, InvalidTypeError, StoreError
from .generation.backend import get_generator, loaded_generator
from .models.pull import is_default_base_model_ready
from .registry import modules as registry
from .registry.modules import store_has_modules
from .store.client import ServerOptions, make_provider
from .types import NamespaceStatus, StoreStatus

if TYPE_CHECKING:
    from .generation.backend import Generator
    from .routing.index import RoutingIndex
    from .store.buffer import Buffer
    from .store.embedder import MiniLMEmbeddingFunction


logger = logging.getLogger("lora_memory_plugin.memory")  # the facade's logger: messages unchanged


class Store:
    """One open store's parts, shared by the facade, consolidation and answering."""

    def __init__(self, path: Path, config: StoreConfig, provider: Any, chroma_url: str) -> None:
        from .routing import RoutingIndex
        from .store.buffer import Buffer
        from .store.embedder import MiniLMEmbeddingFunction

        self.path = path
        self.config = config
        self.chroma_url = chroma_url
        emb = config.models.embedder
        self.embedder: MiniLMEmbeddingFunction = MiniLMEmbeddingFunction(
            model_path=None if emb == "default" else emb, device=config.models.device
        )
        self.buffer: Buffer = Buffer(provider, self.embedder)
        self.routing: RoutingIndex = RoutingIndex(path, provider, self.buffer)

    @classmethod
    def open(
        cls,
        path: str | Path,
        chroma_url: str | None = None,
        *,
        create: bool = True,
        base_model: str | None = None,
        embedder: str | None = None,
        chroma_database: str | None = None,
    ) -> Store:
        """Open (or create) the store at ``path``: see :meth:`.memory.LoRAMemory.open`."""
        if not isinstance(path, (str, Path)):
            raise InvalidTypeError(f"path must be a str or Path, got {type(path).__name__}")
        if "\0" in str(path):
            raise StoreError(f"a store path cannot contain a NUL byte: {str(path)!r}")
        root = Path(path).expanduser()
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file, not a store directory; pick another path")
        cfg_path = root / CONFIG_NAME
        if cfg_path.exists() or (root.is_dir() and cfg_path.is_symlink()):
            config = load_config(root)
            for name, given, saved in (
                ("base_model", base_model, config.models.base_model),
                ("embedder", embedder, config.models.embedder),
                ("chroma_database", chroma_database, config.buffer.chroma_database),
            ):
                if given is not None and given != saved:
                    logger.warning(
                        "%s=%r ignored: the store at %s was created with %r (edit %s to change it)",
                        name,
                        given,
                        root,
                        saved,
                        CONFIG_NAME,
                    )
        else:
            if not create:
                raise StoreError(
                    f"no lora-memory store at {root}: create it with `lora-memory init {root}`"
                )
            if root.is_dir() and any(root.iterdir()):
                raise StoreError(
                    f"{root} is a non-empty directory without {CONFIG_NAME}; refusing to turn it "
                    "into a store. Use an empty or new directory."
                )
            # Built through the section dataclasses so bad values raise ConfigError here.
            config = StoreConfig(
                models=ModelConfig(
                    base_model=base_model if base_model is not None else DEFAULT_BASE_MODEL,
                    embedder=embedder if embedder is not None else DEFAULT_EMBEDDER,
                ),
                buffer=BufferConfig(
                    chroma_url=chroma_url or "",
                    chroma_database=chroma_database or "default_database",
                ),
            )
            try:
                root.mkdir(parents=True, exist_ok=True)
                (root / "locks").mkdir(exist_ok=True)
                save_config(root, config)
            except OSError as e:
                raise StoreError(f"cannot create a store at {root}: {e}") from e
        url = chroma_url if chroma_url is not None else config.buffer.chroma_url
        # modules were trained from a buffer that must be there: a missing one is never
        # created silently (a typo in chroma_database, a lost volume, a deleted DIR/chroma)
        b = config.buffer
        provider = make_provider(
            root,
            url,
            b.chroma_database,
            has_modules=lambda: store_has_modules(root),
            options=ServerOptions(
                b.chroma_auth,
                b.chroma_token_header,
                b.chroma_ca_file,
                tuple(sorted(b.chroma_headers.items())),
            ),
        )
        return cls(root, config, provider, url)

    def generator(self) -> Generator:
        """The loaded base-model generator (loads on first use; one per model in a process)."""
        m = self.config.models
        gen = get_generator(m.base_model, m.device, m.dtype)
        gen.max_resident = self.config.routing.max_resident
        return gen

    def generator_if_loaded_forget(self, module_id: str) -> None:
        """Unload ``module_id`` from the generator if the generator is loaded."""
        m = self.config.models
        gen = loaded_generator(m.base_model, m.device, m.dtype)
        if gen is not None:
            gen.forget_adapter(module_id)

    def base_model_ready(self) -> bool:
        """Whether the base model can load without a download (``models pull`` done)."""
        if self.config.models.base_model == "default":
            return is_default_base_model_ready()
        return True

    def status(self) -> StoreStatus:
        """Counts per namespace (records, modules, quarantined) and whether the base model is
        ready."""
        nss = []
        for ns in self.buffer.namespaces():
            total = self.buffer.count(ns)
            buffered = self.buffer.count(ns, {"status": "buffered"})
            turns = self.buffer.count(ns, {"kind": "turn"})
            nss.append(
                NamespaceStatus(
                    ns,
                    total,
                    buffered,
                    total - buffered,
                    turns,
                    total - turns,
                    modules=len(registry.list_modules(self.path, ns)),
                    quarantined=tuple(registry.list_quarantined(self.path, ns)),
                )
            )
        return StoreStatus(
            path=str(self.path),
            backend=self.chroma_url or "embedded",
            base_model=self.config.models.base_model,
            embedder=self.config.models.embedder,
            namespaces=tuple(nss),
            base_model_ready=self.base_model_ready(),
        )

    def update_config(self, **sections: Mapping[str, Any]) -> StoreConfig:
        """Change saved settings: validated like the file, written atomically under the store's
        config lock, re-read first so a concurrent update is not lost."""
        with file_lock(self.path / "locks" / "config.lock", what="config update"):
            data = load_config(self.path).to_dict()
            for name, values in sections.items():
                if name not in data or not isinstance(data[name], dict):
                    raise InvalidInputError(f"unknown config section {name!r}")
                if not isinstance(values, Mapping):
                    raise InvalidTypeError(f"[{name}] values must be a mapping")
                for key in values:
                    if key not in data[name]:
                        raise InvalidInputError(f"unknown key {key!r} in [{name}]")
                data[name].update(values)
            config = StoreConfig.from_dict(data, source="update_config")
            save_config(self.path, config)
        self.config = config
        return config


__all__ = ["Store"]
