"""Unit tests run with network sockets disabled (a test that needs the network is a bug)."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_socket import disable_socket


@pytest.fixture(autouse=True)
def _no_network() -> None:
    disable_socket(allow_unix_socket=True)


@pytest.fixture(scope="session")
def served() -> Any:
    """Unit tests use the store itself only (the service run needs a socket)."""
    return lambda mem: mem
