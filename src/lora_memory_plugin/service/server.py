"""Running the service app on uvicorn, with the checks that keep a keyless service local."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, MissingExtraError
from ..memory import LoRAMemory
from .jobs import Schedule
from .keys import KeyRing

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
KEYS_FILE = "api-keys.json"
"""The key file's default name, next to the store (``DIR/api-keys.json``)."""


def default_keys_path(store: str | Path) -> Path:
    return Path(store) / KEYS_FILE


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, 'localhost')."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_auth_setting(host: str, keys: KeyRing | None) -> None:
    """A service without keys answers anyone who can reach it: only on loopback, and only when
    asked for (``keys=None``). With keys, at least one must exist."""
    if keys is None:
        if not is_loopback(host):
            raise ConfigError(
                f"--no-auth serves every namespace to anyone who can connect, so it binds to "
                f"loopback only; got --host {host}. Create a key (`lora-memory keys create DIR "
                "--namespace '*'`) to serve on other addresses"
            )
        return
    if not keys.grants():
        where = keys.path or "the environment"
        raise ConfigError(
            f"no API keys in {where}: create one with `lora-memory keys create DIR --namespace "
            "'PATTERN'` (or set LORA_MEMORY_API_KEYS), or pass --no-auth to serve on loopback "
            "without keys"
        )


def serve(
    mem: LoRAMemory,
    keys: KeyRing | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_batch: int = 16,
    batch_wait_s: float = 0.005,
    consolidate_every: float | None = None,
    min_new_records: int = 8,
    schedules: Sequence[Schedule] = (),
    log_level: str = "info",
) -> None:
    """Serve ``mem`` until interrupted (Ctrl-C or SIGTERM stop it cleanly)."""
    check_auth_setting(host, keys)
    try:
        import uvicorn  # noqa: PLC0415 (the serve extra)

        from .app import create_app  # noqa: PLC0415 (imports fastapi)
    except ImportError as e:
        raise MissingExtraError(
            f"lora-memory serve needs the serve extra: pip install 'lora-memory-plugin[serve]' "
            f"({e})"
        ) from e
    app = create_app(
        mem,
        keys,
        max_batch=max_batch,
        batch_wait_s=batch_wait_s,
        consolidate_every=consolidate_every,
        min_new_records=min_new_records,
        schedules=schedules,
    )
    logger.info("serving %s on http://%s:%d", mem.path, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
