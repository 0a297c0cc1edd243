"""Named crash points for the crash-safety tests.

``LORA_MEMORY_FAILPOINTS="committed"`` (a comma-separated list) makes the process SIGKILL itself
the first time it reaches ``failpoint("committed")``: the test then checks what a real crash at
that exact point leaves behind (nothing lost, no half module, the re-run completes). The same
technique as etcd's gofail or SQLite's test hooks; unset, a failpoint is one dict lookup.

Points in a consolidation run, in order: ``selected`` (records chosen), ``trained`` (adapter
in memory), ``saved`` (adapter written to a temp dir), ``module_written`` (registry temp dir
written and fsynced, before the rename), ``committed`` (after the rename, before marking),
``marking`` (after the first marking batch), ``marked`` (before replaced modules are removed).
In forget: ``forget_module_removed`` (after the first module removal), ``forget_deleted`` (after
the records' deletion).

``name=enospc`` or ``name=eio`` raises ``OSError`` with that errno there instead, as the next
write would on a full disk or a failing one: the fault tests check that the error reaches the
caller, no lock stays held, nothing stored is lost and a re-run completes.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "LORA_MEMORY_FAILPOINTS"


ERRNO = {"enospc": errno.ENOSPC, "eio": errno.EIO}


def failpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is listed in ``$LORA_MEMORY_FAILPOINTS``; raise the
    listed ``OSError`` for ``name=enospc`` / ``name=eio``."""
    armed = os.environ.get(ENV)
    if not armed:
        return
    for entry in armed.split(","):
        point, _, action = entry.strip().partition("=")
        if point != name:
            continue
        if not action:
            os.kill(os.getpid(), signal.SIGKILL)
        code = ERRNO.get(action)
        if code is None:
            raise ValueError(f"{ENV}: unknown action {action!r} for {name!r} (kill, {set(ERRNO)})")
        raise OSError(code, f"{os.strerror(code)} (failpoint {name})")
