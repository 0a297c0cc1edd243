"""Train the top layers over cached activations of the frozen ones.

With LoRA on the top N transformer layers only (``TrainConfig.top_layers``), everything below
them is frozen: for a given example the input to the lowest trained layer is the same at every
step. :class:`FrozenBottom` computes it once per example and each training step runs only the
top N layers, the final norm and the LM head (at supervised positions), forward and backward.
On SmolLM2-135M (30 layers) with the top 8 trained, a step does about a quarter of the work.

The top layers are run as the model's own forward runs them (its causal mask, rotary position
embeddings, decoder layers and norm), so the result is exact; :meth:`FrozenBottom.build` checks
that against a plain forward pass on the first examples and returns None -- the trainer then
runs the whole model -- when the architecture differs (no ``model.layers`` / ``rotary_emb`` /
``norm``, or other numbers), or when the cache would exceed its memory budget.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CACHE_BUDGET_BYTES = 2 << 30
"""Cached activations above this (summed over examples) are not cached: the trainer runs the
whole model instead."""


class FrozenBottom:
    """Cached inputs of the lowest trained layer, one ``[length, hidden]`` tensor per example."""

    def __init__(self, model: Any, top: int) -> None:
        self.base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.inner = self.base.model
        self.first = len(self.inner.layers) - top  # index of the lowest trained layer
        self.states: list[torch.Tensor] = []

    @staticmethod
    def supports(model: Any, top: int) -> bool:
        """A decoder-only model shaped like Llama (layers, rotary_emb, norm) with layers to
        freeze below the top ``top``."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner: Any = getattr(base, "model", None)
        if not all(hasattr(inner, a) for a in ("layers", "rotary_emb", "norm")):
            return False
        return base.get_output_embeddings() is not None and 0 < top < len(inner.layers)

    @classmethod
    def build(
        cls,
        model: Any,
        top: int,
        rows: Sequence[Sequence[int]],
        pad_id: int,
        device: Any,
        *,
        batch_size: int = 16,
        budget_bytes: int = CACHE_BUDGET_BYTES,
    ) -> FrozenBottom | None:
        """Run the frozen layers once over ``rows`` (token ids) and keep their output; None when
        this model or this much data cannot be cached (the trainer then runs the whole model)."""
        import torch

        if not cls.supports(model, top):
            logger.info(
                "frozen layers not cached: no layer below the top %d, or not shaped like Llama",
                top,
            )
            return None
        self = cls(model, top)
        width = int(self.base.config.hidden_size)
        dtype = next(self.base.parameters()).dtype
        need = sum(len(r) for r in rows) * width * torch.finfo(dtype).bits // 8
        if need > budget_bytes:
            logger.info("frozen layers not cached: %d MiB > budget", need >> 20)
            return None
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        states: dict[int, torch.Tensor] = {}
        was_training = self.base.training
        self.base.eval()
        with torch.no_grad():  # not inference_mode: the states feed autograd later
            for at in range(0, len(order), batch_size):
                idx = order[at : at + batch_size]
                ids, mask = _pad([rows[i] for i in idx], pad_id, device)
                hidden = self._bottom(ids, mask)  # [B, T, d]: input of the lowest trained layer
                for j, i in enumerate(idx):
                    states[i] = hidden[j, : len(rows[i])].clone()
            self.states = [states[i] for i in range(len(rows))]
            ok = self._matches_full_forward(order[:4], rows, pad_id, device)  # the shortest
        self.base.train(was_training)
        if not ok:
            logger.warning("frozen layers not cached: cached forward differs from the model's")
            return None
        return self

    def _bottom(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The input of the lowest trained layer for ``ids`` ``[B, T]``: the model's own forward,
        stopped there (the layers above would cost as much again and are discarded)."""
        seen: list[torch.Tensor] = []

        def grab(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.append(args[0] if args else kwargs["hidden_states"])
            raise _Reached

        hook = self.inner.layers[self.first].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.base.model(input_ids=ids, attention_mask=mask)
        except _Reached:
            pass
        finally:
            hook.remove()
        return seen[0]

    def logits(self, idx: Sequence[int], mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, V]`` at the ``keep`` positions (``[B, T]`` bool) of the rows ``idx``,
        running the top layers only. ``mask`` is the rows' ``[B, T]`` attention mask."""
        from torch.nn.utils.rnn import pad_sequence
        from transformers.masking_utils import create_causal_mask

        hidden = pad_sequence([self.states[i] for i in idx], batch_first=True)  # [B, T, d]
        hidden = hidden[:, : mask.shape[1]]
        positions = _arange_like(mask)  # [1, T]: as the model numbers a right-padded batch
        causal = create_causal_mask(
            config=self.inner.config,
            inputs_embeds=hidden,
            attention_mask=mask,
            past_key_values=None,
            position_ids=positions,
        )
        rotary = self.inner.rotary_emb(hidden, position_ids=positions)
        for layer in self.inner.layers[self.first :]:
            hidden = layer(
                hidden, attention_mask=causal, position_embeddings=rotary, position_ids=positions
            )
        hidden = self.inner.norm(hidden)
        return self.base.get_output_embeddings()(hidden[keep])  # type: ignore[no-any-return]

    def _matches_full_forward(
        self, idx: Sequence[int], rows: Sequence[Sequence[int]], pad_id: int, device: Any
    ) -> bool:
        import torch

        ids, mask = _pad([rows[i] for i in idx], pad_id, device)
        keep = mask.bool()
        full = self.base(input_ids=ids, attention_mask=mask).logits[keep].float()  # [N, V]
        cached = self.logits(idx, mask, keep).float()  # [N, V]
        tol = 1e-3 if next(self.base.parameters()).dtype == torch.float32 else 5e-2
        scale = float(full.abs().max().clamp_min(1.0))
        return bool((full - cached).abs().max() <= tol * scale)


class _Reached(Exception):  # noqa: N818 -- control flow, not an error
    """Raised by the hook on the lowest trained layer: the frozen part has run."""


def _pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(r) for r in rows)
    ids = [list(r) + [pad_id] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)  # [B, T] each


def _arange_like(mask: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.arange(mask.shape[1], device=mask.device)[None]  # [1, T]
