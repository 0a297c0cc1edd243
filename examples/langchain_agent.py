"""A LangChain agent that remembers across sessions: told a fact in session 1, it answers it in
session 2 from its consolidated LoRA memory.

Run it after `make demo`'s set-up (the .venv and the default models), offline on CPU:
    .venv/bin/pip install -e integrations/langchain
    .venv/bin/python examples/langchain_agent.py [--store DIR]

The agent is `create_agent` with ChatLoRAMemory (SmolLM2-135M in this process, plus the user's
routed LoRA module) as its model, LoRAMemoryMiddleware (recall into the system message before
each model call, write the turns after the agent) and LoRAMemoryStore as its long-term store.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_lora_memory import ChatLoRAMemory, LoRAMemoryMiddleware, LoRAMemoryStore
from langgraph.checkpoint.memory import InMemorySaver

from lora_memory_plugin import LoRAMemory

USER = "dana"
FACT = "Please remember: my locker code is 4471."
QUESTION = "What is my locker code?"


def run(agent: Any, text: str, thread: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    out: dict[str, Any] = agent.invoke(
        {"messages": [("user", text)]},
        {"configurable": {"thread_id": thread}},
        context={"user_id": USER},
    )
    reply = out["messages"][-1]
    print(f"  user : {text}")
    print(f"  agent: {reply.text!r}  ({time.perf_counter() - t0:.1f}s)")
    meta = reply.response_metadata
    print(f"  model: modules={meta.get('modules')} confidence={meta.get('confidence', 0):.2f}")
    for r in out.get("lora_memory_recalled", []):
        m = r["metadata"]
        where = (
            f"parametric, modules={m['modules']}, confidence={m['confidence']:.2f}"
            if m["memory"] == "parametric"
            else f"buffer, score={m['score']:.2f}, session={m.get('session_id')}"
        )
        print(f"  used : {r['page_content']!r}  ({where})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="demo-memory-langchain", help="store dir (recreated)")
    args = ap.parse_args()
    if Path(args.store).exists():
        shutil.rmtree(args.store)
    mem = LoRAMemory.open(args.store)

    model = ChatLoRAMemory(memory=mem, namespace=USER, max_new_tokens=16)
    agent = create_agent(
        model,
        system_prompt=mem.config.generation.system_prompt,
        middleware=[LoRAMemoryMiddleware(memory=mem, k=2)],
        store=LoRAMemoryStore(memory=mem),
        checkpointer=InMemorySaver(),
    )

    print("== session 1: the user tells a fact (the middleware writes the turns) ==")
    run(agent, FACT, thread="session-1")

    print("\n== consolidate: buffered turns -> a LoRA module ==")
    t0 = time.perf_counter()
    [report] = mem.consolidate(USER)
    print(
        f"  {report.status}: {report.records_consolidated} record(s) into "
        f"{list(report.modules_created)} in {time.perf_counter() - t0:.1f}s"
    )

    print("\n== session 2: a new thread, nothing in its context ==")
    run(agent, QUESTION, thread="session-2")

    print("\n== what the parametric memory alone recalls ==")
    rec = mem.recall(USER, QUESTION)
    print(f"  recall: {rec.text!r} modules={list(rec.modules)} confidence={rec.confidence:.2f}")


if __name__ == "__main__":
    main()
