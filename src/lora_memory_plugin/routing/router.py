"""Route a question to the modules of its namespace, with a confidence.

Scores come from record-level matches, not from whole-module embeddings (the paper found
routing to a module's mean embedding falls below a single LoRA): the question's nearest keys
vote for their modules, a module's score is its best key's cosine similarity (so a big module's
many near-misses do not outvote a small module's exact match), and its *share* is a softmax of
those scores at a low temperature: two modules with nearly equal best keys split it, one module
far ahead takes nearly all of it. A module's confidence is its share times its best key's
similarity, so a lone module matched loosely is not reported as certain. Below ``min_score``
nothing is routed: the question is not about anything consolidated, and the caller falls back
to rag. A split (top share under ``split_below``) is decided on the share.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .index import KeyHit


class KeyIndex(Protocol):
    """What routing reads: the nearest keys of a namespace (:class:`.index.RoutingIndex`)."""

    def query(self, namespace: str, text: str, k: int) -> list[KeyHit]: ...


@dataclass(frozen=True)
class RoutedModule:
    """One candidate module for a question."""

    module_id: str
    score: float  # best key's cosine similarity
    confidence: float  # share x score, clamped to [0, 1]
    votes: int  # keys among the nearest that belong to it
    best_key: str = ""  # the text of its best key
    share: float = 0.0  # softmax share of the candidates (sums to 1)


@dataclass(frozen=True)
class RouteDecision:
    """Where a question goes: ranked candidates, the chosen ones, and why."""

    namespace: str
    query: str
    candidates: tuple[RoutedModule, ...] = ()
    chosen: tuple[str, ...] = ()  # modules that answer (top-1 by default)
    split: bool = False  # confidence is shared: competing modules' records go in context
    reason: str = ""
    keys: tuple[KeyHit, ...] = field(default=(), repr=False)

    @property
    def confidence(self) -> float:
        return self.candidates[0].confidence if self.candidates and self.chosen else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples)."""
        d = asdict(self)
        d["confidence"] = self.confidence
        out: dict[str, Any] = json.loads(json.dumps(d))
        return out


def route(
    index: KeyIndex,
    namespace: str,
    query: str,
    live: set[str],
    *,
    top_k: int,
    min_score: float,
    temperature: float,
    split_below: float,
) -> RouteDecision:
    """Rank the committed modules ``live`` of ``namespace`` for ``query``."""
    if not live:
        return RouteDecision(namespace, query, reason="no consolidated modules")
    keys = [h for h in index.query(namespace, query, top_k) if h.module_id in live]
    if not keys:
        return RouteDecision(namespace, query, reason="no routing keys (index empty)")
    best: dict[str, KeyHit] = {}
    votes: dict[str, int] = {}
    for h in keys:  # best first
        best.setdefault(h.module_id, h)
        votes[h.module_id] = votes.get(h.module_id, 0) + 1
    ranked = sorted(best, key=lambda m: (best[m].score, votes[m]), reverse=True)
    top = best[ranked[0]].score
    weights = {m: math.exp((best[m].score - top) / temperature) for m in ranked}
    total = sum(weights.values())
    candidates = tuple(
        RoutedModule(
            m,
            best[m].score,
            weights[m] / total * min(max(best[m].score, 0.0), 1.0),
            votes[m],
            best[m].text,
            weights[m] / total,
        )
        for m in ranked
    )
    if top < min_score:
        return RouteDecision(
            namespace,
            query,
            candidates,
            reason=f"best key scored {top:.2f} < min_score {min_score:.2f}: not consolidated",
            keys=tuple(keys),
        )
    first = candidates[0]
    split = len(candidates) > 1 and first.share < split_below
    reason = f"top key {top:.2f} ({first.votes}/{len(keys)} nearest keys)"
    if split:
        reason += f"; share {first.share:.2f} < {split_below:.2f}, shared with " + ", ".join(
            f"{c.module_id} ({c.share:.2f})" for c in candidates[1:3]
        )
    chosen = (first.module_id,)
    return RouteDecision(namespace, query, candidates, chosen, split, reason, tuple(keys))
