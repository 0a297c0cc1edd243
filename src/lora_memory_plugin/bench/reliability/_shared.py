"""What several reliability parts use: consolidation options, a word list for generated text,
progress lines on stderr, and the run's temporary directory."""

from __future__ import annotations

import contextlib
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Cheap consolidation: plain prose, 3 steps; what is under test is locking, not learning.
CHEAP_CONSOLIDATION: dict[str, Any] = {"max_steps": 3, "mixture": "original", "drift_max": 100.0}

# fmt: off
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "locker", "code", "phone", "garden",
    "kitchen", "train", "ticket", "flight", "gate", "passport", "dentist", "cake", "router",
]
# fmt: on


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def sentence(rng: random.Random, n: int = 8) -> str:
    """``n`` words drawn from :data:`WORDS`."""
    return " ".join(rng.choice(WORDS) for _ in range(n))


@contextlib.contextmanager
def tmp_dir(keep: bool) -> Iterator[Path]:
    """A fresh temporary directory, deleted afterwards unless ``keep``."""
    d = Path(tempfile.mkdtemp(prefix="lm-reliability-"))
    try:
        yield d
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
