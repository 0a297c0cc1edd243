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

from ..generation.prefix import common_prefix

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
            ok = self._matches_full_forward(order[:2], rows, pad_id, device)  # the shortest
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

    def logits(
        self, idx: Sequence[int], mask: torch.Tensor, keep: torch.Tensor, prefix: int = 0
    ) -> torch.Tensor:
        """Logits ``[N, V]`` at the ``keep`` positions (``[B, T]`` bool) of the rows ``idx``,
        running the top layers only. ``mask`` is the rows' ``[B, T]`` attention mask.

        ``prefix``: the rows' first ``prefix`` tokens are the same (the chat template and system
        prompt, a third of a short example) and no ``keep`` position lies among them: the top
        layers run them once, for one row, and every row attends to that one copy of their keys
        and values -- as a decoder with a KV cache does. Gradients flow through the shared copy.
        """
        import torch
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
        p = prefix if self.can_share_prefix and hidden.shape[0] > 1 else 0
        if p:
            if bool(keep[:, :p].any()):
                raise ValueError("a kept position lies inside the shared prefix")
            width = mask.shape[1]
            if causal is None:  # no padding, so none was built; SDPA's is_causal would align
                # the shorter query block top-left: build the mask ourselves
                causal = torch.ones(width, width, dtype=torch.bool, device=mask.device).tril()
                causal = causal[None, None]  # [1, 1, T, T]
            shared = _SharedPrefix()
            head = hidden[:1, :p]  # [1, p, d]: the same in every row (same tokens, causal)
            cos, sin = rotary
            for layer in self.inner.layers[self.first :]:
                head = layer(
                    head,
                    attention_mask=None,  # causal over the prefix alone
                    position_embeddings=(cos[:, :p], sin[:, :p]),
                    position_ids=positions[:, :p],
                    past_key_values=shared,
                    use_cache=True,
                )
            shared.rows = hidden.shape[0]
            hidden, keep = hidden[:, p:], keep[:, p:]
            causal, rotary = causal[:, :, p:], (cos[:, p:], sin[:, p:])
            positions = positions[:, p:]
        else:
            shared = None
        for layer in self.inner.layers[self.first :]:
            hidden = layer(
                hidden,
                attention_mask=causal,
                position_embeddings=rotary,
                position_ids=positions,
                past_key_values=shared,
                use_cache=shared is not None,
            )
        hidden = self.inner.norm(hidden)
        return self.base.get_output_embeddings()(hidden[keep])  # type: ignore[no-any-return]

    @property
    def can_share_prefix(self) -> bool:
        """Prefix sharing builds a boolean attention mask, the format SDPA takes."""
        return getattr(self.inner.config, "_attn_implementation", None) == "sdpa"

    def _matches_full_forward(
        self, idx: Sequence[int], rows: Sequence[Sequence[int]], pad_id: int, device: Any
    ) -> bool:
        """The cached forward equals a plain one: every position, and -- where the rows share
        a prefix -- the positions after it with the prefix run once."""
        import torch

        ids, mask = _pad([rows[i] for i in idx], pad_id, device)
        keep = mask.bool()
        full = self.base(input_ids=ids, attention_mask=mask).logits.float()  # [B, T, V]
        tol = 1e-3 if next(self.base.parameters()).dtype == torch.float32 else 5e-2
        scale = float(full.abs().max().clamp_min(1.0))
        checks = [(0, keep)]
        p = common_prefix([rows[i] for i in idx]) - 1  # leave one position to compare
        if p > 0 and len(idx) > 1 and self.can_share_prefix:
            after = keep.clone()
            after[:, :p] = False
            checks.append((p, after))
        for prefix, where in checks:
            cached = self.logits(idx, mask, where, prefix).float()  # [N, V]
            if not bool((full[where] - cached).abs().max() <= tol * scale):
                return False
        return True


class _SharedPrefix:
    """The KV cache of a prefix every row shares, computed for one row.

    The decoder layers' attention calls ``update(keys, values, layer_idx)`` with ``[B, heads, T,
    dim]`` tensors and attends to what it returns. While ``rows`` is 0 the prefix is running:
    its keys and values are kept. Then each call prepends them, broadcast to ``rows`` rows.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_: Any, **__: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if not self.rows:
            self.kv[layer_idx] = (keys, values)
            return keys, values
        k, v = self.kv[layer_idx]  # [1, heads, p, dim]
        shape = (self.rows, -1, -1, -1)
        return torch.cat([k.expand(shape), keys], dim=2), torch.cat(
            [v.expand(shape), values], dim=2
        )


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
