"""What every benchmark records about the machine it ran on (``lora-memory bench`` and the
reliability parts, ``python -m lora_memory_plugin.bench.reliability``)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any


def command_output(cmd: Sequence[str]) -> str:
    """stdout of ``cmd`` run next to this package (its git checkout, if any), or ''."""
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=Path(__file__).parent,
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip()


def cpu_model() -> str:
    for line in command_output(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def base_environment(packages: Sequence[str]) -> dict[str, Any]:
    """CPU, OS, Python, package versions, git commit, date and load average."""
    uname = platform.uname()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "uname": f"{uname.system} {uname.release} {uname.machine}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in packages},
        "git_commit": command_output(["git", "rev-parse", "HEAD"]) or "unknown",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def device_name(device: str = "auto") -> str:
    """The accelerator the benchmarks ran on, in words ("cpu" when none)."""
    import torch  # noqa: PLC0415 (heavy; only when a bench runs)

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    if device in ("auto", "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
