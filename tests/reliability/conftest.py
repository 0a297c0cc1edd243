"""The reliability tests run the functions of benchmarks/reliability.py with small counts (the
script runs them with the full ones); this loads that script as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reliability.py"


@pytest.fixture(scope="session")
def rel() -> ModuleType:
    name = "lora_memory_reliability"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
