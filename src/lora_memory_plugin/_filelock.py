"""Inter-process file locks (``fcntl.flock``) used for store writes and consolidation."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import LockHeldError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_thread_locks: dict[str, threading.RLock] = {}
_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.RLock:
    with _guard:
        return _thread_locks.setdefault(str(path), threading.RLock())


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True, what: str = "lock") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes and threads.

    Raises:
        LockHeldError: when ``blocking`` is False and another holder has it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tlock = _thread_lock(path)
    if not tlock.acquire(blocking=blocking):
        raise LockHeldError(f"{what} is held by another thread of this process ({path})")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
                try:
                    fcntl.flock(fd, flags)
                except BlockingIOError as e:
                    raise LockHeldError(
                        f"{what} is held by another process ({path}); try again when it finishes"
                    ) from e
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        tlock.release()
