"""Stacked mixed-batch LoRA gives what peft's per-module loop gives, row by row."""

from __future__ import annotations

import pytest
import torch

from lora_memory_plugin.generation import multilora
from lora_memory_plugin.generation.backend import _peft_mixed_batch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model with three random LoRA modules of different ranks and scalings."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for name, r, alpha in (("a", 4, 8), ("b", 8, 8), ("c", 2, 16)):
        cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", lora_dropout=0.1)
        m.add_adapter(cfg, adapter_name=name)
        for layer in multilora.lora_layers(m):  # peft starts B at zero: make every delta real
            torch.nn.init.normal_(layer.lora_B[name].weight, std=0.5)
    return m.eval()  # new adapter modules start in training mode (dropout on)


def _logits(model, names, mixed):
    torch.manual_seed(1)
    ids = torch.randint(3, 200, (len(names), 9))
    with torch.inference_mode(), mixed:
        return model(input_ids=ids).logits


def test_stacked_matches_peft_mixed_batch_per_row(model):
    names = ["a", "b", multilora.BASE, "c", "a", "b"]
    layers = multilora.lora_layers(model)
    assert multilora.stackable(layers, names)
    model.enable_adapters()
    ref = _logits(model, names, _peft_mixed_batch(layers, names))
    got = _logits(model, names, multilora.stacked_lora(model, layers, names))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    base = _logits(model, names, multilora.stacked_lora(model, layers, [multilora.BASE] * 6))
    torch.testing.assert_close(got[2], base[2], rtol=1e-4, atol=1e-4)  # the base row is bare
    assert (got[0] - base[0]).abs().max() > 1e-2  # and the adapters change the others
    # the hooks are gone afterwards and the model's own adapter path is back on
    assert all(not layer._forward_hooks for layer in layers)
    assert all(not layer.disable_adapters for layer in layers)


def test_too_large_a_summed_rank_is_left_to_peft(model, monkeypatch):
    layers = multilora.lora_layers(model)
    monkeypatch.setattr(multilora, "MAX_STACKED_RANK", 11)
    assert not multilora.stackable(layers, ["a", "b"])  # 4 + 8
    assert multilora.stackable(layers, ["a", "c", "a"])  # 4 + 2
    assert multilora.stackable(layers, [multilora.BASE])  # no module at all: nothing to stack


def test_a_batch_of_another_size_is_refused(model):
    layers = multilora.lora_layers(model)
    with multilora.stacked_lora(model, layers, ["a", "b"]), pytest.raises(RuntimeError):
        model(input_ids=torch.ones(3, 4, dtype=torch.long))


def test_shared_prefixes_in_a_mixed_batch_stay_within_a_module(model):
    """Rows of different modules never share a prefix's keys and values (the same tokens give
    others under another module); rows of one module do, with the same greedy output."""
    from types import SimpleNamespace

    from lora_memory_plugin.generation import prefix
    from lora_memory_plugin.generation.backend import greedy_rows

    torch.manual_seed(2)
    head = torch.randint(3, 200, (24,)).tolist()
    rows = [head + torch.randint(3, 200, (n,)).tolist() for n in (3, 5, 2, 4, 3, 6)]
    names = ["a", "a", "b", "b", multilora.BASE, multilora.BASE]
    p = prefix.plan(rows, keys=names)
    assert p is not None and len(set(p.group)) == 3
    assert all(p.group[i] == p.group[i + 1] for i in (0, 2, 4))  # one group per module
    layers = multilora.lora_layers(model)
    model.enable_adapters()
    tok = SimpleNamespace(pad_token_id=0)

    def run(share):
        with torch.inference_mode():
            new, _ = greedy_rows(
                model, tok, rows, 6, "cpu", share_prefix=share, modules=names,
                mixed=lambda n: multilora.stacked_lora(model, layers, n),
            )  # fmt: skip
        return new

    plain, shared = run(False), run(True)
    assert shared == plain
    assert plain[0] != plain[2] or plain[0] != plain[4]  # the modules do answer differently
