"""Grouping prompts by shared prefix, and the rows ``generate`` gets (pure functions; the
generation itself is checked against the plain batch in tests/consolidation/test_writers.py)."""

from __future__ import annotations

from lora_memory_plugin.generation.prefix import MIN_SHARED, layout, plan

HEAD = list(range(100, 100 + 40))  # 40 shared tokens: a system prompt and a notes block


def test_rows_sharing_a_long_prefix_form_a_group_and_the_rest_stay_alone():
    rows = [[*HEAD, 1, 2], [*HEAD, 3], [*HEAD, 1, 4, 5], [7, 8, 9], [*HEAD[:20], 6, 6, 6]]
    p = plan(rows)
    assert p is not None
    assert p.group[0] == p.group[1] == p.group[2]  # the three questions on the same notes
    assert len(set(p.group)) == 3
    assert p.prefix[p.group[0]] == 40  # what all three share: the notes block
    assert p.prefix[p.group[3]] == 2  # a loner keeps one token to prefill: its last
    assert p.slots(rows) < len(rows) * max(map(len, rows))


def test_no_plan_when_nothing_is_shared_or_sharing_does_not_pay():
    assert plan([[1, 2, 3], [4, 5, 6]]) is None
    assert plan([[*HEAD, 1]]) is None  # one row
    short = HEAD[: MIN_SHARED - 1]
    assert plan([[*short, 1], [*short, 2]]) is None  # below the minimum
    # two rows that share 20 of 200 tokens: not worth a second batch
    assert plan([HEAD[:20] + [1] * 180, HEAD[:20] + [2] * 180]) is None


def test_a_group_does_not_shrink_to_a_short_common_start():
    """A third row sharing only the system prompt does not cut the group's prefix to it."""
    a = [*HEAD, 1, 2, 3]
    b = [*HEAD, 1, 2, 4]
    c = HEAD[:18] + [9] * 30
    p = plan([a, b, c])
    assert p is not None and p.group[0] == p.group[1] != p.group[2]
    assert p.prefix[p.group[0]] == 42


def test_layout_keeps_every_row_whole_and_masks_only_the_padding():
    rows = [[*HEAD, 1, 2], [*HEAD, 3], [7] * 30 + [8]]
    p = plan(rows, min_shared=16)
    assert p is not None
    head_ids, head_mask, ids, mask = layout(rows, p, pad=0)
    assert len(head_ids) == len(set(p.group)) and {len(h) for h in head_ids} == {max(p.prefix)}
    width = len(head_ids[0])
    for r, g, row, m in zip(rows, p.group, ids, mask, strict=True):
        assert row[:width] == head_ids[g] and m[:width] == head_mask[g]
        assert [t for t, k in zip(row, m, strict=True) if k] == r  # the prompt, in order
        assert len(row) == len(ids[0])
        assert m[-1] == 1  # the last prompt token sits in the last column
