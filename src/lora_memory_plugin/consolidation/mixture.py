"""Names of the training-data strategies and the ``"qa+summary+original"`` mixture syntax.

Kept free of heavy imports: the store config validates ``[consolidation] mixture`` with it.
"""

from __future__ import annotations

#: The paper's order of usefulness: QA > summary > rewrite > original (mixtures best).
STRATEGIES: tuple[str, ...] = ("qa", "summary", "rewrite", "original")
#: Context distillation (:mod:`.distill`): questions answered by the base model reading the
#: records. Combines with ``original`` only (``"distill+original"``); ``all`` does not include it.
DISTILL = "distill"
NAMES: tuple[str, ...] = (DISTILL, *STRATEGIES)


def parse_mixture_names(spec: str) -> tuple[str, ...]:
    """``"qa+original"`` -> ``("qa", "original")``; ``"all"`` -> every strategy.

    Raises ValueError naming the unknown or repeated strategy.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a mixture is strategies joined by '+', got {spec!r}")
    if spec.strip().lower() == "all":
        return STRATEGIES
    names = tuple(p.strip().lower() for p in spec.split("+"))
    for name in names:
        if name not in NAMES:
            raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"strategy repeated in {spec!r}")
    if DISTILL in names and not set(names) <= {DISTILL, "original"}:
        raise ValueError(f"'distill' combines with 'original' only, got {spec!r}")
    return names
