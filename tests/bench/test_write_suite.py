"""The ``write`` suite's pieces without models: its turns, the fill vectors, its sizes, and the
summary / table / plot on a made-up result. The suite itself runs in test_bench.py."""

from __future__ import annotations

from unittest.mock import MagicMock

import numpy as np
import pytest

from lora_memory_plugin import InvalidInputError
from lora_memory_plugin.bench import write
from lora_memory_plugin.bench._common import BenchOptions, Context


def test_turns_are_distinct_deterministic_chat_turns():
    turns = write.make_turns(500, seed=3)
    assert turns == write.make_turns(500, seed=3) != write.make_turns(500, seed=4)
    assert len({t.text for t in turns}) == 500
    assert all(write.MIN_WORDS <= len(t.text.split()) <= write.MAX_WORDS for t in turns)
    assert [t.role for t in turns[:5]] == list(write.ROLES_CYCLE)
    assert turns[0].session_id == "session-00000" and turns[20].session_id == "session-00001"
    assert write.make_queries(7, seed=1) == write.make_queries(7, seed=1)


def test_fill_vectors_reuse_the_pool_then_noisy_copies():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((4, 16)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    v = write.fill_vectors(pool, 2, 10, seed=1)
    assert v.shape == (8, 16)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[:2], pool[2:4])  # records 2, 3: their own real embeddings
    cos = np.sum(v[2:] * pool[np.arange(4, 10) % 4], axis=1)  # records 4..9: noisy copies
    assert np.all((cos > 0.6) & (cos < 0.999))
    assert np.array_equal(v, write.fill_vectors(pool, 2, 10, seed=1))


def test_sizes_come_from_set_and_are_checked(tmp_path):
    def config(**overrides):
        ctx = Context(BenchOptions(quick=True, work=tmp_path, overrides=overrides))
        ctx.suite = write.NAME
        try:
            return write._config(ctx)
        finally:
            ctx.close()

    quick = config()
    assert quick["sizes"] == [1000] and quick["pool"] == 256 and quick["single_calls"] == 40
    small = config(sizes=100, **{"write.pool": 500})
    assert small["sizes"] == [100] and small["pool"] == 100  # the pool never exceeds the store
    with pytest.raises(InvalidInputError):
        config(sizes=(1000, 100))
    with pytest.raises(InvalidInputError):
        config(queries=1)


def _made_up_result() -> dict:
    def lat(ms: float) -> dict:
        return {"p50": ms, "p95": 2 * ms, "mean": ms, "min": ms, "max": 2 * ms}

    single = {"calls": 4, **write.side_by_side(4, [0.1] * 4, [0.05] * 4)}
    batched = {"batch_size": 256, "batches": 2, **write.side_by_side(512, [1.0, 1.0], [1.0, 1.0])}
    searches = [
        {
            "size": n,
            "ours_ms": lat(r),
            "raw_ms": lat(10.0),
            "ratio_p50": r / 10,
            "ratio_p95": r / 10,
        }
        | {"top_k_agreement": 1.0}
        for n, r in ((1000, 10.0), (10000, 12.0))
    ]
    fills = [{"size": n, "added": n, **write.side_by_side(n, [1.0], [2.0])} for n in (1000, 10000)]
    cfg = {"k": 5, "seed": 0, "queries": 3, "warmup": 10, "pool": 256, "batch_size": 256}
    return {
        "config": cfg,
        "write": {"single": single, "batched": batched},
        "fill": fills,
        "search": searches,
        "embed_pool": {"texts": 256, "per_s": 100.0},
    }


def test_summary_table_and_plot():
    res = _made_up_result()
    head = write.summary(res)
    assert head["add_turn_per_s"] == pytest.approx(
        {"ours": 10.0, "raw": 20.0, "ours_over_raw": 0.5}
    )
    assert head["add_turns_per_s"]["ours"] == pytest.approx(256.0)
    assert head["search_p50_ms"]["ours_over_raw"] == pytest.approx(1.2)  # the largest size
    assert list(head["targets"].values()) == [True, False]  # 12 ms / 10 ms > 1.15
    md = write.markdown(res)
    assert md.count("\n| ") == 2 + 2 + 2 * 2  # add_turn, add_turns, two fills, p50 + p95 twice
    assert "| 2.00x |" in md and "1.200x | <= 1.15x | **no** |" in md

    ax = MagicMock()
    write.plot(res, ax)
    (_, values), _ = ax.bar.call_args
    assert values == pytest.approx([2.0, 1.0, 0.5, 0.5, 1.0, 1.2])
