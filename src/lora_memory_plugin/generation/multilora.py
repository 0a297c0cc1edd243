"""Mixed-batch LoRA: each row of one batch gets its own module, in one forward pass.

peft's mixed-batch forward (``adapter_names=``) loops over the batch's modules in every LoRA
layer: gather the module's rows, two small matmuls, scale, scatter back, about seven tensor ops
per module per layer per decoding step. :func:`stacked_lora` does the same arithmetic as two
matmuls per layer whatever the number of modules (the idea of S-LoRA / Punica's batched LoRA):

    delta = ((x @ A_cat.T) * row_scale) @ B_cat.T

``A_cat`` stacks the batch's modules' ``lora_A`` rows (sum of ranks x in), ``B_cat`` their
``lora_B`` columns (out x sum of ranks), and ``row_scale`` (batch x 1 x sum of ranks) holds, for
each row, the module's LoRA scaling on that module's rank block and zeros elsewhere (all zeros
for a base-model row). Rows multiply the other modules' blocks by zero: extra FLOPs of
``(modules - 1) x rank x (in + out)`` per token and layer, small next to the base layer's
``in x out`` while the batch's summed rank is small, which is when it is used
(:func:`stackable`); otherwise peft's loop runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

BASE = "__base__"

#: Use the stacked form while the batch's summed LoRA rank in every layer is at most this: 16
#: modules of rank 16, a whole default batch. Measured on SmolLM2-135M (2-core CPU, one thread,
#: batch 16, 48 prompt + 16 new tokens, r=16 on all linear layers): the stacked form took 0.66-0.88x
#: the time of peft's loop at 1, 2, 4, 8 and 16 modules; beyond 16 it was not measured.
MAX_STACKED_RANK = 256


def lora_layers(model: Any) -> list[Any]:
    from peft.tuners.lora import LoraLayer  # noqa: PLC0415 (peft on first use)

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def stackable(layers: list[Any], names: list[str]) -> bool:
    """True when every layer can run the batch's modules as plain stacked LoRA (no DoRA or
    other variant, linear layers) with a summed rank small next to the layer."""
    wanted = {n for n in names if n != BASE}
    for layer in layers:
        present = [a for a in wanted if a in layer.lora_A]
        if not present:
            continue
        if any(a in getattr(layer, "lora_variant", {}) for a in present):
            return False
        if any(getattr(layer, "use_dora", {}).get(a, False) for a in present):
            return False
        w = getattr(layer.get_base_layer(), "weight", None)
        if w is None or w.dim() != 2:
            return False
        if sum(layer.r[a] for a in present) > MAX_STACKED_RANK:
            return False
    return True


@contextlib.contextmanager
def stacked_lora(model: Any, layers: list[Any], names: list[str]) -> Iterator[None]:
    """Run ``model`` with row ``i`` of every batch using LoRA module ``names[i]`` (``BASE``:
    none). The model's own adapter path is switched off meanwhile; the row count of every
    call must be ``len(names)`` (true for ``generate``, which never drops finished rows)."""
    import torch  # noqa: PLC0415 (torch on first use)

    wanted = sorted({n for n in names if n != BASE})
    rows_of = {a: [i for i, n in enumerate(names) if n == a] for a in wanted}
    handles = []
    for layer in layers:
        present = [a for a in wanted if a in layer.lora_A]
        if not present:
            continue
        a_cat = torch.cat([layer.lora_A[a].weight for a in present], dim=0)
        b_cat = torch.cat([layer.lora_B[a].weight for a in present], dim=1)
        scale = torch.zeros(len(names), 1, a_cat.shape[0], dtype=a_cat.dtype, device=a_cat.device)
        start = 0
        for a in present:
            r = layer.r[a]
            scale[rows_of[a], :, start : start + r] = float(layer.scaling[a])
            start += r
        handles.append(layer.register_forward_hook(_hook(a_cat, b_cat, scale, len(names))))
    model.disable_adapters()
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        model.enable_adapters()


def _hook(a_cat: Any, b_cat: Any, scale: Any, rows: int) -> Any:
    a_t, b_t = a_cat.t(), b_cat.t()

    def hook(_module: Any, args: Any, out: Any) -> Any:
        x = args[0]
        if x.shape[0] != rows:
            raise RuntimeError(f"stacked LoRA built for {rows} rows got a batch of {x.shape[0]}")
        s = scale if x.dim() == 3 else scale[:, 0, :]
        delta = ((x.to(a_t.dtype) @ a_t) * s) @ b_t
        return out + delta.to(out.dtype)

    return hook
