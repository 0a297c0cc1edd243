"""API keys of the memory service: stored hashed, each granted namespace patterns.

A key is ``lmk_<id>_<secret>``; only its SHA-256 is kept. A request's namespace comes from the
URL and is allowed only when one of its key's patterns matches it (shell-style,
case-sensitive: ``user-*``, ``team-a/*``, ``*``). The key file is JSON, written atomically with
mode 0600; keys can also come from the environment (``LORA_MEMORY_API_KEYS``, a JSON object of
key -> list of patterns), which are hashed on load and never written anywhere.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .._fsutil import fsync_dir
from ..errors import ConfigError, InvalidInputError

ENV_KEYS = "LORA_MEMORY_API_KEYS"
KEY_PREFIX = "lmk_"
KEYS_FORMAT = 1


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Grant:
    """One API key as stored: its id, a name for people, its hash and its namespace patterns."""

    key_id: str
    name: str
    key_hash: str
    namespaces: tuple[str, ...]
    created_at: float = 0.0

    def allows(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)


def check_patterns(patterns: Iterable[object]) -> tuple[str, ...]:
    """Namespace patterns: non-empty strings, at least one."""
    if isinstance(patterns, str):
        patterns = [patterns]
    given = tuple(patterns)
    out = tuple(p for p in given if isinstance(p, str) and p.strip())
    if not out or len(out) != len(given):
        raise InvalidInputError(
            f"namespace patterns must be non-empty strings such as 'user-*' or '*', got {given!r}"
        )
    return out


class KeyRing:
    """The keys a service accepts: those of a key file plus those from the environment.

    Args:
        path: the JSON key file (created by :meth:`create`); None for environment keys only.
        env: the environment to read ``LORA_MEMORY_API_KEYS`` from (default ``os.environ``).
    """

    def __init__(self, path: str | Path | None = None, env: Mapping[str, str] | None = None):
        self.path = Path(path) if path is not None else None
        self._env = os.environ if env is None else env

    # ---- reading -----------------------------------------------------------------------
    def grants(self) -> list[Grant]:
        """Every accepted key (the file is read again each call: a revoke takes effect now)."""
        return self._file_grants() + self._env_grants()

    def authenticate(self, key: str | None) -> Grant | None:
        """The grant of ``key``, or None for a missing or unknown key (compared in constant
        time against every stored hash)."""
        if not key:
            return None
        given = hash_key(key)
        found = None
        for g in self.grants():
            if hmac.compare_digest(given, g.key_hash):
                found = g
        return found

    def _file_grants(self) -> list[Grant]:
        if self.path is None or not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [
                Grant(
                    str(k["key_id"]),
                    str(k.get("name", "")),
                    str(k["key_hash"]),
                    check_patterns(k["namespaces"]),
                    float(k.get("created_at", 0.0)),
                )
                for k in data["keys"]
            ]
        except (OSError, ValueError, KeyError, TypeError, InvalidInputError) as e:
            raise ConfigError(f"{self.path} is not a valid lora-memory key file: {e}") from e

    def _env_grants(self) -> list[Grant]:
        raw = self._env.get(ENV_KEYS, "").strip()
        if not raw:
            return []
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return [
                Grant(f"env-{i}", "environment", hash_key(str(key)), check_patterns(patterns))
                for i, (key, patterns) in enumerate(data.items())
            ]
        except (ValueError, InvalidInputError) as e:
            raise ConfigError(
                f"{ENV_KEYS} must be a JSON object of key -> list of namespace patterns, e.g. "
                f'\'{{"my-secret-key": ["user-*"]}}\': {e}'
            ) from e

    # ---- writing -----------------------------------------------------------------------
    def create(self, namespaces: Iterable[str], *, name: str = "") -> tuple[str, Grant]:
        """Make a new key granted ``namespaces``; returns the key (shown once) and its grant."""
        patterns = check_patterns(namespaces)
        key_id = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        grant = Grant(key_id, name, hash_key(key), patterns, time.time())
        self._write([*self._file_grants(), grant])
        return key, grant

    def revoke(self, key_id: str) -> bool:
        """Remove the key ``key_id`` from the file; False when there was none."""
        kept = [g for g in self._file_grants() if g.key_id != key_id]
        if len(kept) == len(self._file_grants()):
            return False
        self._write(kept)
        return True

    def _write(self, grants: list[Grant]) -> None:
        if self.path is None:
            raise ConfigError("no key file: pass a path to keep keys in")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"format": KEYS_FORMAT, "keys": [asdict(g) for g in grants]}
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(self.path.parent)
