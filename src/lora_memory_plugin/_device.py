"""Device and dtype selection shared by the embedder, the generator and (later) the trainer."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
_threads_set = False


def configure_cpu_threads() -> None:
    """Use every core this process may run on (torch defaults can be lower in containers)."""
    global _threads_set  # noqa: PLW0603
    if _threads_set:
        return
    import torch

    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, n))
    _threads_set = True


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        configure_cpu_threads()
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cpu":
        configure_cpu_threads()
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> Any:
    """'auto' -> bf16 on CUDA (when supported), fp32 elsewhere (CPU bf16 matmuls are slow)."""
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cuda":
            return torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class quiet_loading:  # noqa: N801 - used like a function: `with quiet_loading():`
    """Silence transformers' per-load progress bars ("Loading weights") and load reports inside
    a library call. Loading a second LoRA module prints a LOAD REPORT listing the first module's
    weights as "MISSING ... newly initialized": each adapter file holds only its own weights, and
    the others stay as they were (checked), so the report is noise to our users."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self._was = hf_logging.is_progress_bar_enabled()
        self._verbosity = hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)
        if self._was:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
