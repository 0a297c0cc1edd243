"""Base-model drift: how much a trained module changes the model on text it was not trained on.

The paper leaves damage to the base model unmeasured (arXiv 2603.01097, "not measured"); a
memory system must not trade general ability for recall. The check is cheap: perplexity of a
small built-in control text (plain encyclopedic prose, unrelated to any store) with the adapter
active, relative to the same model with the adapter disabled. ``drift = ppl_lora / ppl_base - 1``
(0.10 = 10% higher perplexity). During distillation :class:`DriftGuard` checks it before each
held-out evaluation, so training stops at the limit and keeps the best weights within it; over
``[consolidation] drift_max`` at the end the engine retries with a gentler setting, then keeps
the records buffered.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CONTROL_TEXT = (
    "The water cycle describes how water moves between the oceans, the air and the land. Heat "
    "from the sun evaporates water from the sea, and the vapour rises, cools and condenses into "
    "clouds. When the droplets grow heavy enough they fall as rain or snow. Some of that water "
    "runs off into rivers and flows back to the sea; some soaks into the ground and is stored "
    "for years in aquifers.\n\n"
    "Bread is one of the oldest prepared foods. A simple loaf needs flour, water, salt and "
    "yeast. Kneading develops gluten, a network of proteins that traps the gas made by the "
    "yeast, so the dough rises. Baking sets the structure and browns the crust.\n\n"
    "Printing with movable type spread across Europe in the fifteenth century. Books became "
    "cheaper and more common, literacy grew, and ideas travelled faster than ever before. "
    "Libraries and schools multiplied in the cities that had presses."
)


def perplexity(model: Any, tokenizer: Any, text: str = CONTROL_TEXT) -> float:
    """Token-level perplexity of ``text`` under ``model`` (no grad, model's own device)."""
    import torch  # noqa: PLC0415 (torch on first use)

    device = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    with torch.inference_mode():
        loss = model(input_ids=ids, labels=ids).loss
    return math.exp(float(loss))


@contextlib.contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """``model`` in eval mode inside the block, back in the mode it was in after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def measure_drift(peft_model: Any, tokenizer: Any, text: str = CONTROL_TEXT) -> dict[str, float]:
    """``{"ppl_base", "ppl_lora", "drift"}`` for a ``peft.PeftModel`` with its adapter trained."""
    with _evaluating(peft_model):
        ppl_lora = perplexity(peft_model, tokenizer, text)
        with peft_model.disable_adapter():
            ppl_base = perplexity(peft_model, tokenizer, text)
    return {"ppl_base": ppl_base, "ppl_lora": ppl_lora, "drift": ppl_lora / ppl_base - 1.0}


@dataclass
class DriftGuard:
    """``guard`` for :func:`.trainer.train_lora`: why the weights in training may not be kept
    (drift over ``limit``), or None. The base perplexity is measured once, on the first call,
    and serves every later call (the engine's retry at half the learning rate too)."""

    tokenizer: Any
    limit: float
    text: str = CONTROL_TEXT
    readings: list[float] = field(default_factory=list)
    _ppl_base: float | None = None

    def __call__(self, peft_model: Any) -> str | None:
        with _evaluating(peft_model):
            if self._ppl_base is None:
                with peft_model.disable_adapter():
                    self._ppl_base = perplexity(peft_model, self.tokenizer, self.text)
            drift = perplexity(peft_model, self.tokenizer, self.text) / self._ppl_base - 1.0
        self.readings.append(drift)
        return f"drift {drift:+.1%} > {self.limit:.0%}" if drift > self.limit else None
