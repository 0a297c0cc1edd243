"""Named crash points for the crash-safety tests.

``LORA_MEMORY_FAILPOINTS="committed"`` (a comma-separated list) makes the process SIGKILL itself
the first time it reaches ``failpoint("committed")``: the test then checks what a real crash at
that exact point leaves behind (nothing lost, no half module, the re-run completes). The same
technique as etcd's gofail or SQLite's test hooks; unset, a failpoint is one dict lookup.

Points in a consolidation run, in order: ``selected`` (records chosen), ``trained`` (adapter
in memory), ``saved`` (adapter written to a temp dir), ``module_written`` (registry temp dir
written and fsynced, before the rename), ``committed`` (after the rename, before marking),
``marking`` (after the first marking batch), ``marked`` (before replaced modules are removed).
"""

from __future__ import annotations

import os
import signal

ENV = "LORA_MEMORY_FAILPOINTS"


def failpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is listed in ``$LORA_MEMORY_FAILPOINTS``."""
    armed = os.environ.get(ENV)
    if armed and name in {p.strip() for p in armed.split(",")}:
        os.kill(os.getpid(), signal.SIGKILL)
