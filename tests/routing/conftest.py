"""Routing tests run on embedded Chroma with the sharpened tiny model (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def backend() -> str:
    return "embedded"


@pytest.fixture
def store(make_store, sharp_model_dir, one_thread):
    """A store answering with the sharpened tiny model, on one thread."""
    return make_store(base_model=str(sharp_model_dir))
