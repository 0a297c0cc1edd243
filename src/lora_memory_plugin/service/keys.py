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

from .._filelock import file_lock
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
        # every request authenticates: the file is parsed (and the environment's keys hashed)
        # again only when it changed; a write replaces the file, so a revoke is seen at once
        self._file_cache: tuple[tuple[int, int, int], list[Grant]] | None = None
        self._env_cache: tuple[str, list[Grant]] | None = None

    # ---- reading -----------------------------------------------------------------------
    def grants(self) -> list[Grant]:
        """Every accepted key (the file as it is now: a revoke takes effect at once)."""
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
        if self.path is None:
            return []
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise ConfigError(f"{self.path} is not a valid lora-memory key file: {e}") from e
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._file_cache is None or self._file_cache[0] != stamp:
            self._file_cache = (stamp, self._parse_file())
        return list(self._file_cache[1])

    def _parse_file(self) -> list[Grant]:
        assert self.path is not None
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
        if self._env_cache is None or self._env_cache[0] != raw:
            self._env_cache = (raw, self._parse_env(raw) if raw else [])
        return list(self._env_cache[1])

    def _parse_env(self, raw: str) -> list[Grant]:
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
        with self._writing():
            self._write([*self._file_grants(), grant])
        return key, grant

    def revoke(self, key_id: str) -> bool:
        """Remove the key ``key_id`` from the file; False when there was none."""
        with self._writing():
            grants = self._file_grants()
            kept = [g for g in grants if g.key_id != key_id]
            if len(kept) == len(grants):
                return False
            self._write(kept)
        return True

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """The key file's lock: two ``keys create`` at once must not lose one of the keys."""
        if self.path is None:
            raise ConfigError("no key file: pass a path to keep keys in")
        return file_lock(self.path.with_name(f".{self.path.name}.lock"), what="the key file")

    def _write(self, grants: list[Grant]) -> None:
        assert self.path is not None  # _writing() checked it
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
