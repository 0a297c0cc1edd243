"""Default models: the base LLM (SmolLM2-135M-Instruct) and the sentence embedder.

Importing this package is cheap: torch and transformers are only imported when a model is
actually converted or loaded.
"""

from __future__ import annotations

from .pull import (
    DEFAULT_LLM_NAME,
    DEFAULT_LLM_WHEEL,
    PullReport,
    default_base_model_dir,
    default_embedder_dir,
    fingerprint_model_dir,
    is_default_base_model_ready,
    pull_default_models,
)

__all__ = [
    "DEFAULT_LLM_NAME",
    "DEFAULT_LLM_WHEEL",
    "PullReport",
    "default_base_model_dir",
    "default_embedder_dir",
    "fingerprint_model_dir",
    "is_default_base_model_ready",
    "pull_default_models",
]
