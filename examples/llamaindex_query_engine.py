"""lora-memory in a LlamaIndex query engine: add documents, consolidate, query both tiers.

Run it after `make demo`'s set-up (a .venv with the default models pulled) and the LlamaIndex
integration installed:
    .venv/bin/pip install -e integrations/llama-index/llama-index-memory-lora-memory \
        -e integrations/llama-index/llama-index-retrievers-lora-memory \
        -e integrations/llama-index/llama-index-llms-lora-memory
    .venv/bin/python examples/llamaindex_query_engine.py [--store DIR] [--max-minutes M]
Everything runs offline on CPU with the default models (SmolLM2-135M-Instruct + MiniLM); the
consolidation step trains a LoRA module on CPU and takes minutes (--max-minutes bounds it).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.llms.lora_memory import LoRAMemoryLLM
from llama_index.retrievers.lora_memory import LoRAMemoryRetriever

from lora_memory_plugin import LoRAMemory

NAMESPACE = "northwind"
# FAQ entries, one per document: a "Question: ... Answer: ..." record trains as that pair.
# (Prose goes through the synthetic-data writer, which the 135M default model does poorly.)
FAQ = {
    "Which extension do I call in an emergency?": "5150",
    "Where are lost badges replaced?": "Room B-104",
    "What is the extension of the IT helpdesk?": "4242",
    "What is the guest wifi network called?": "NW-Guest",
}
DOCUMENTS = {f"faq-{i}.md": f"Question: {q}\nAnswer: {a}" for i, (q, a) in enumerate(FAQ.items())}
QUESTIONS = list(FAQ)


def ask_all(engine: RetrieverQueryEngine, llm: LoRAMemoryLLM) -> None:
    for q in QUESTIONS:
        t0 = time.perf_counter()
        response = engine.query(q)
        seconds = time.perf_counter() - t0
        print(f"Q: {q}\nA: {str(response)[:120]!r}  ({seconds:.2f}s)")
        for n in response.source_nodes:
            meta = n.node.metadata
            origin = meta.get("modules") or meta.get("source") or meta.get("role")
            text = " ".join(n.node.get_content().split())[:70]
            print(f"   {meta['memory_tier']:10} {n.score:.2f}  {origin}  {text!r}")
        # The LLM on its own says what answered (mode, modules), as every response does.
        info = llm.complete(q).additional_kwargs
        print(f"   LLM alone: mode={info['mode']} modules={info['modules']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="demo-memory-llamaindex", help="store dir (recreated)")
    ap.add_argument("--max-minutes", type=float, default=10.0, help="consolidation budget")
    args = ap.parse_args()
    store = Path(args.store)
    if store.exists():
        shutil.rmtree(store)

    mem = LoRAMemory.open(store)
    for source, text in DOCUMENTS.items():
        ids = mem.add_document(NAMESPACE, text, source=source)
        print(f"added {source}: {len(ids)} chunk(s)")

    # Retrieval from both tiers; answers from the base model with the routed LoRA module.
    retriever = LoRAMemoryRetriever(memory=mem, namespace=NAMESPACE, similarity_top_k=2)
    llm = LoRAMemoryLLM(memory=mem, namespace=NAMESPACE, mode="lora", max_new_tokens=32)
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm)

    print("\n== before consolidation: buffer hits; no module yet, so the base model answers ==")
    ask_all(engine, llm)

    print(f"\n== consolidate (trains a LoRA module on CPU, <= {args.max_minutes} min) ==")
    [report] = mem.consolidate(NAMESPACE, max_minutes=args.max_minutes, progress=True)
    print(
        f"{report.status}: {report.records_consolidated}/{report.records_in} records -> "
        f"{list(report.modules_created)} in {report.seconds:.0f}s "
        f"(probe recall {report.probe_recall})"
    )
    for note in report.notes:
        print(f"   note: {note}")

    print("\n== after consolidation: recollection from the module + buffer hits ==")
    ask_all(engine, llm)
    print(f"\nstore at {store}; try `lora-memory modules {store} -n {NAMESPACE}`")


if __name__ == "__main__":
    main()
