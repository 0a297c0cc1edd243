"""End to end on the real default models (SmolLM2-135M-Instruct + MiniLM), small scale.

Needs `lora-memory models pull` (make test runs it first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lora_memory_plugin import LoRAMemory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FACTS = [
    "My locker code is 4471, please remember it.",
    "My manager is Priya Raman.",
    "I'm allergic to peanuts.",
    "The weather was nice during the team offsite.",
]


@pytest.fixture(scope="module")
def mem(tmp_path_factory):
    from lora_memory_plugin.models.pull import is_default_base_model_ready

    if not is_default_base_model_ready():
        pytest.fail("default model not pulled: run `lora-memory models pull` (make test does)")
    m = LoRAMemory.open(tmp_path_factory.mktemp("real") / "store")
    m.add_turns("dana", [{"content": f, "session_id": "s1"} for f in FACTS])
    return m


@pytest.mark.parametrize(
    ("question", "expected"),
    [("What is my locker code?", "4471"), ("Who is my manager?", "Priya")],
)
def test_rag_answers_from_the_buffer(mem, question, expected):
    ans = mem.ask("dana", question, mode="rag", max_new_tokens=24)
    assert expected in ans.text, ans
    assert expected in ans.sources[0].text
    assert ans.context_tokens > 0 and ans.timings["generate"] > 0


def test_base_mode_does_not_see_the_buffer(mem):
    ans = mem.ask("dana", "What is my locker code?", mode="base", max_new_tokens=24)
    assert ans.sources == ()
    assert "4471" not in ans.text


def test_template_uses_our_system_prompt(mem):
    gen = mem.generator()
    prompt = gen.render(
        [
            {"role": "system", "content": mem.config.generation.system_prompt},
            {"role": "user", "content": "hi"},
        ]
    )
    assert "named SmolLM" not in prompt
    assert mem.config.generation.system_prompt in prompt
    assert gen.device.type in ("cpu", "cuda", "mps")


def test_cli_ask_end_to_end(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "lora-memory")
    store = tmp_path / "cli-store"
    subprocess.run([exe, "init", str(store)], check=True, capture_output=True)
    subprocess.run(
        [exe, "add", str(store), "-n", "u", "--text", "My locker code is 4471."],
        check=True,
        capture_output=True,
    )
    r = subprocess.run(
        [exe, "ask", str(store), "-n", "u", "What is my locker code?", "--mode", "rag", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    ans = json.loads(r.stdout)
    assert "4471" in ans["text"] and ans["mode"] == "rag"
