"""Prompts that share a long prefix are prefilled once per prefix.

The teacher asks several questions about the same records: its prompts share the system
prompt and the whole notes block, and differ only in the question. On a CPU the prefill of a
batch is compute-bound (about 3 ms a token for SmolLM2-135M on 2 cores), so prefilling each
distinct prefix once, for one row, and letting every row that shares it attend to that copy of
its keys and values -- as a KV cache does -- removes much of the work (the Lisbon story's 31
teacher prompts: 3,813 padded token slots -> 2,140, and 17.8 s -> 12.4 s).

:func:`plan` groups token-id rows by shared prefix and says whether that pays;
:func:`layout` builds the prefix batch and the full rows for ``generate``: each row is its
group's prefix (right-padded to the longest prefix) followed by its own suffix (left-padded to
the longest suffix), with an attention mask that hides both paddings. Positions are counted
over unmasked tokens, so every row sees exactly what it would see alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

MIN_SHARED = 16
"""Rows join a group only when they share at least this many leading tokens."""

WORTH = 0.75
"""Share prefixes only when that leaves at most this fraction of the plain batch's token slots."""


@dataclass(frozen=True)
class Plan:
    """``group[i]``: row i's group; ``prefix[g]``: how many leading tokens group g's rows share
    (at most each row's length - 1, so every row keeps a token to prefill)."""

    group: tuple[int, ...]
    prefix: tuple[int, ...]

    def slots(self, rows: Sequence[Sequence[int]]) -> int:
        """Token slots prefilled: the prefix batch plus the suffix batch, padded."""
        width = max(self.prefix)
        suffix = max(len(r) - self.prefix[g] for r, g in zip(rows, self.group, strict=True))
        return len(self.prefix) * width + len(rows) * suffix


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row has in common (at most the shortest row's length)."""
    n = 0
    for column in zip(*rows, strict=False):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


def _runs(rows: Sequence[Sequence[int]], order: list[int], adj: list[int], t: int) -> Plan:
    """Groups: the runs of sorted rows whose neighbours share at least ``t`` tokens; a group
    shares the least of its neighbours' prefixes (in sorted order, that is what all its rows
    share), a loner all but its last token."""
    group = [0] * len(rows)
    prefix: list[int] = []
    for k, i in enumerate(order):
        if k and adj[k - 1] >= t:
            prefix[-1] = min(prefix[-1], adj[k - 1], len(rows[i]) - 1)
        else:
            prefix.append(len(rows[i]) - 1)
        group[i] = len(prefix) - 1
    return Plan(tuple(group), tuple(prefix))


def plan(
    rows: Sequence[Sequence[int]],
    *,
    keys: Sequence[str] | None = None,
    min_shared: int = MIN_SHARED,
) -> Plan | None:
    """Group ``rows`` by shared prefix so that the fewest token slots are prefilled; None when
    no two rows share ``min_shared`` tokens or sharing would not save ``1 - WORTH``.

    ``keys``: rows group only with rows of the same key (their LoRA module: the same tokens
    give other keys and values under another module).

    In sorted order sharers are neighbours; each threshold ``t`` on the neighbours' shared
    length cuts the rows into runs, and the cheapest of those cuts wins (a batch holds a few
    dozen rows, so trying every threshold is cheap)."""
    if len(rows) < 2 or any(len(r) < 2 for r in rows):
        return None
    key = list(keys) if keys is not None else [""] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: (key[i], list(rows[i])))
    adj = [
        common_prefix((rows[a], rows[b])) if key[a] == key[b] else 0
        for a, b in itertools.pairwise(order)
    ]
    cuts = [_runs(rows, order, adj, t) for t in sorted({a for a in adj if a >= min_shared})]
    if not cuts:
        return None
    best = min(cuts, key=lambda p: p.slots(rows))
    plain = len(rows) * max(len(r) for r in rows)
    return best if best.slots(rows) <= WORTH * plain else None


def heads(p: Plan) -> list[int]:
    """Per group, the first row in it (whose module runs the group's prefix)."""
    first: dict[int, int] = {}
    for i, g in enumerate(p.group):
        first.setdefault(g, i)
    return [first[g] for g in range(len(p.prefix))]


def layout(
    rows: Sequence[Sequence[int]], p: Plan, pad: int
) -> tuple[list[list[int]], list[list[int]], list[list[int]], list[list[int]]]:
    """``(prefix_ids, prefix_mask, ids, mask)``: the groups' prefixes, right-padded (one row a
    group), and the full rows: prefix (right-padded) + suffix (left-padded)."""
    width = max(p.prefix)
    prefix_ids, prefix_mask = [], []
    for g, first in enumerate(heads(p)):
        h = rows[first][: p.prefix[g]]
        prefix_ids.append([*h, *[pad] * (width - len(h))])
        prefix_mask.append([1] * len(h) + [0] * (width - len(h)))
    tail = max(len(r) - p.prefix[g] for r, g in zip(rows, p.group, strict=True))
    ids, mask = [], []
    for r, g in zip(rows, p.group, strict=True):
        own = list(r[p.prefix[g] :])
        gap = tail - len(own)
        ids.append([*prefix_ids[g], *[pad] * gap, *own])
        mask.append([*prefix_mask[g], *[0] * gap, *[1] * len(own)])
    return prefix_ids, prefix_mask, ids, mask


__all__ = ["MIN_SHARED", "WORTH", "Plan", "common_prefix", "heads", "layout", "plan"]
