"""What ``LoRAMemory.open`` builds and owns: the config, the buffer, the routing index and the
generator factory of one store (the :class:`.ports.Services` the layers below the facade use).

It validates nothing a caller sends -- the facade does that -- and it never calls back up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import StoreConfig, load_config, save_config
from .errors import InvalidInputError, InvalidTypeError

if TYPE_CHECKING:
    from .generation.backend import Generator
    from .routing.index import RoutingIndex
    from .store.buffer import Buffer
    from .store.embedder import MiniLMEmbeddingFunction


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

    def generator(self) -> Generator:
        """The loaded base-model generator (loads on first use; one per model in a process)."""
        from .generation.backend import get_generator

        m = self.config.models
        gen = get_generator(m.base_model, m.device, m.dtype)
        gen.max_resident = self.config.routing.max_resident
        return gen

    def generator_if_loaded_forget(self, module_id: str) -> None:
        """Unload ``module_id`` from the generator if the generator is loaded."""
        from .generation.backend import loaded_generator

        m = self.config.models
        gen = loaded_generator(m.base_model, m.device, m.dtype)
        if gen is not None:
            gen.forget_adapter(module_id)

    def base_model_ready(self) -> bool:
        """Whether the base model can load without a download (``models pull`` done)."""
        if self.config.models.base_model == "default":
            from .models.pull import is_default_base_model_ready

            return is_default_base_model_ready()
        return True

    def update_config(self, **sections: Mapping[str, Any]) -> StoreConfig:
        """Change saved settings: validated like the file, written atomically under the store's
        config lock, re-read first so a concurrent update is not lost."""
        from ._filelock import file_lock

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
