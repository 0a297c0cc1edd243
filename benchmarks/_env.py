"""What every benchmark records about the machine: re-exported from the package's bench harness
(``lora_memory_plugin.bench._env``) so scripts here and ``lora-memory bench`` agree."""

from __future__ import annotations

from pathlib import Path

from lora_memory_plugin.bench._env import base_environment, command_output, cpu_model, version

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["REPO_ROOT", "base_environment", "command_output", "cpu_model", "version"]
