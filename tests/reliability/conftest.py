"""The reliability tests run the parts of ``lora_memory_plugin.bench.reliability`` with small
counts (``python -m lora_memory_plugin.bench.reliability`` runs them with the full ones); each test
imports its part's module. ``boxes``: the small store the disk- and server-fault tests write,
consolidate and check."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from lora_memory_plugin.registry import modules as registry


class BoxFacts:
    """Three box codes stored as QA turns in namespace ``ns``, trained fast."""

    FACTS: ClassVar[list[tuple[str, str]]] = [
        (f"What is the code of box {i}?", c) for i, c in enumerate(["4471", "9302", "1185"])
    ]
    FAST: ClassVar[dict[str, Any]] = {"lr": 1e-2, "rank": 16, "max_steps": 400}

    @staticmethod
    def add(mem: Any, facts: list[tuple[str, str]]) -> list[str]:
        return list(
            mem.add_turns("ns", [{"content": f"Question: {q} Answer: {a}"} for q, a in facts])
        )

    @staticmethod
    def intact(mem: Any, ids: list[str]) -> None:
        """Every record is there; every listed module verifies and lists only live records; no
        half-written module directory is left."""
        assert {r.id for r in mem.get("ns")} == set(ids)
        root = registry.modules_root(mem.path, "ns")
        for m in registry.list_modules(mem.path, "ns"):
            registry.verify_module(root / m.module_id)
            assert set(m.record_ids) <= set(ids)
        if root.exists():
            assert not [p.name for p in root.iterdir() if p.name.startswith(registry.TMP_PREFIX)]


@pytest.fixture
def boxes() -> type[BoxFacts]:
    return BoxFacts
