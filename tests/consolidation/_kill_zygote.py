"""Fork server for ``test_kill.py``: import the heavy libraries once, fork one child per run.

A cold ``python -c "...consolidate..."`` spends ~10 s importing torch, transformers, peft and
chromadb on a small shared CPU, and the crash tests need ~35 runs. This server (started with
``sys.executable``) imports them once and forks a fresh child per consolidation: the child is
still a separate process with its own Chroma client, file descriptors and flocks, dying by a real
SIGKILL (from a failpoint or from the test), it just starts warm. The server itself never opens a
store (Chroma's Rust runtime would not survive a fork) and checks it is single-threaded before
each fork.

Protocol, one JSON object a line. The test writes a command on stdin::

    {"op": "warm", "base_model": PATH}       load the generator once (children inherit it)
    {"op": "consolidate", "store": DIR, "namespace": NS, "options": {...},
     "failpoints": "committed", "fault": null, "result": FILE, "log": FILE,
     "forget_ids": [...]}                    (optional: forget these ids, which rebuilds)

and reads ``{"ok": true}`` for ``warm``; for ``consolidate``, ``{"pid": PID}`` as soon as the
child is forked, then ``{"pid": PID, "returncode": RC}`` once it has exited (RC as ``subprocess``
reports it: -9 for SIGKILL). The child writes its report as JSON to ``result`` (``{"error": ...}``
when it raised) and its stdout/stderr to ``log``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

# Imported once here, so that every forked child starts with them loaded.
import chromadb  # noqa: F401
import peft  # noqa: F401
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401

from lora_memory_plugin import LoRAMemory
from lora_memory_plugin._failpoints import ENV as FAILPOINTS_ENV
from lora_memory_plugin._fsutil import remove_path
from lora_memory_plugin.consolidation import engine, trainer  # noqa: F401
from lora_memory_plugin.registry import modules as registry


def _kill_mid_module_removal() -> None:
    """SIGKILL while a replaced module is deleted: weights gone, manifest still there.

    ``shutil.rmtree`` unlinks in directory order, so a crash can leave any subset of a module's
    files; this is one such state, reached deterministically. The registry renames a module to
    a temp name before deleting it, so this is where the delete runs.
    """

    def remove_then_die(path: Path) -> None:
        path = Path(path)
        if (
            path.name.startswith(f"{registry.TMP_PREFIX}rm-")
            and (path / registry.MANIFEST).is_file()
        ):
            (path / registry.ADAPTER_WEIGHTS).unlink()  # rmtree got this far ...
            os.kill(os.getpid(), signal.SIGKILL)  # ... when the process died
        remove_path(path)

    registry.remove_path = remove_then_die  # type: ignore[attr-defined]


FAULTS = {"kill_mid_module_removal": _kill_mid_module_removal}


def _child(cmd: dict[str, Any]) -> None:
    fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)  # never write into the server's protocol pipe
    os.dup2(fd, 2)
    os.close(fd)
    if cmd.get("failpoints"):
        os.environ[FAILPOINTS_ENV] = cmd["failpoints"]
    else:
        os.environ.pop(FAILPOINTS_ENV, None)
    if cmd.get("fault"):
        FAULTS[cmd["fault"]]()
    torch.set_num_threads(1)
    try:
        mem = LoRAMemory.open(cmd["store"], create=False)
        if cmd.get("forget_ids"):
            fr = mem.forget(cmd["namespace"], cmd["forget_ids"], **cmd["options"])
            if fr.rebuild is None:
                raise RuntimeError(f"forget did not rebuild: {fr}")
            report = fr.rebuild
        else:
            [report] = mem.consolidate(cmd["namespace"], **cmd["options"])
        out: dict[str, Any] = {
            "status": report.status,
            "modules_created": list(report.modules_created),
            "modules_replaced": list(report.modules_replaced),
            "notes": list(report.notes),
        }
    except BaseException as e:  # reported to the test, which fails with the traceback
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    tmp = f"{cmd['result']}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    os.replace(tmp, cmd["result"])
    sys.stdout.flush()
    sys.stderr.flush()


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "warm":
            from lora_memory_plugin.config import ModelConfig
            from lora_memory_plugin.generation.backend import get_generator
            from lora_memory_plugin.testing import wait_for_single_thread

            m = ModelConfig(base_model=cmd["base_model"])
            get_generator(m.base_model, m.device, m.dtype)
            wait_for_single_thread(60)
            names = [t.name for t in threading.enumerate()]
            _reply({"ok": True, "threads": threading.active_count(), "names": names})
            continue
        if threading.active_count() != 1:  # a fork would copy a lock some thread may hold
            _reply({"error": f"server has {threading.active_count()} threads; cannot fork"})
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _child(cmd)
                code = 0
            finally:
                os._exit(code)
        _reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _reply({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    torch.set_num_threads(1)
    _reply({"ready": True})
    main()
    os._exit(0)  # stdin closed: skip the interpreter's slow teardown of torch & co.
