"""Where caches live: ``$LORA_MEMORY_HOME`` or ``~/.cache/lora-memory``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "LORA_MEMORY_HOME"


def home() -> Path:
    """The cache root for downloaded wheels and converted models."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lora-memory"


def models_dir() -> Path:
    return home() / "models"


def wheels_dir() -> Path:
    return home() / "wheels"
