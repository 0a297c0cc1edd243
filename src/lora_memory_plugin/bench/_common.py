"""What the suites share: options, a context (stores, logging, the clock), scoring helpers."""

from __future__ import annotations

import csv
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..consolidation.data import parse_qa
from ..datasets.phonebook import phonebook
from ..memory import LoRAMemory


@dataclass
class BenchOptions:
    """How ``lora-memory bench`` runs. ``quick`` picks small sizes (< 10 minutes on 2 CPU
    cores for every suite together); the full sizes are for GPUs."""

    quick: bool = False
    out: Path = Path("bench-results")
    data: Path | None = None  # the paper's PhoneBook slices (optional; generators otherwise)
    base_model: str | None = None  # None: the store default (SmolLM2-135M-Instruct)
    device: str = "auto"
    seed: int = 0
    work: Path | None = None  # where temporary stores go (default: the system temp dir)
    progress: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # suite sizes, e.g. facts=16


class Context:
    """One bench run: fresh stores under a work dir, progress lines on stderr, timings."""

    def __init__(self, options: BenchOptions) -> None:
        self.options = options
        # the suites' stores and files; deleted by close()
        self.workdir = Path(tempfile.mkdtemp(prefix="lm-bench-", dir=options.work))
        self._stores: list[LoRAMemory] = []
        self.suite = ""  # the suite running now (scopes --set overrides)

    def log(self, msg: str) -> None:
        if self.options.progress:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def size(self, name: str, quick: Any, full: Any) -> Any:
        """A suite parameter: ``--set SUITE.name=value`` or ``--set name=value`` wins, else the
        quick or full default."""
        keys = [f"{self.suite}.{name}", name]
        key = next((k for k in keys if k in self.options.overrides), None)
        if key is not None:
            value = self.options.overrides[key]
            if isinstance(full, tuple) and not isinstance(value, tuple):
                return (value,)
            return value
        return quick if self.options.quick else full

    def train_options(self) -> dict[str, Any]:
        """Extra ``consolidate`` / ``TrainConfig`` options from ``--set max_steps=N``."""
        steps = self.size("max_steps", None, None)
        return {} if steps is None else {"max_steps": int(steps)}

    def store(self, name: str) -> LoRAMemory:
        """A fresh store for one suite (deleted when the run ends)."""
        kwargs: dict[str, Any] = {}
        if self.options.base_model:
            kwargs["base_model"] = self.options.base_model
        mem = LoRAMemory.open(self.workdir / name, **kwargs)
        if self.options.device != "auto":
            mem.update_config(models={"device": self.options.device})
        self._stores.append(mem)
        return mem

    def close(self) -> None:
        for mem in self._stores:
            mem.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def hit(expected: str | Sequence[str], reply: str) -> bool:
    """Exact match as the paper scores PhoneBook: every expected value appears in the reply."""
    values = [expected] if isinstance(expected, str) else list(expected)
    low = reply.lower()
    return all(v.strip().lower() in low for v in values)


def rate(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def pct(xs: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``xs``, nearest rank; 0 for no data."""
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_phonebook(ctx: Context, n: int) -> list[tuple[str, str]]:
    """``n`` (question, number) pairs: the paper's PhoneBook rows when ``--data`` has a slice
    with enough of them (the smallest such slice, first rows), else generated ones."""
    data = ctx.options.data
    if data is not None:
        for name in ("1K", "2K", "4K", "8K", "10K", "20K"):
            path = data / f"phonebook_qa_{name}.csv"
            if not path.is_file():
                continue
            with path.open(newline="", encoding="utf-8") as f:
                pairs = [parse_qa(row["text"]) for row in csv.DictReader(f)]
            rows = [p for p in pairs if p is not None]
            if len(rows) >= n:
                ctx.log(f"PhoneBook {name} from {data}: first {n} of {len(rows)} rows")
                return rows[:n]
    return [(f.question, f.number) for f in phonebook(n, seed=ctx.options.seed)]
