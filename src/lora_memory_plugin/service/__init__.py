"""The memory service: one process owns the store, the base model and the resident adapters,
and many agents share them over HTTP (``lora-memory serve``).

- :mod:`.app`: the FastAPI app (REST for every core operation, typed errors as HTTP codes).
- :mod:`.keys`: API keys, stored hashed, each granted namespace patterns.
- :mod:`.batching`: concurrent questions gathered into one multi-LoRA forward pass.
- :mod:`.server`: running the app on uvicorn.

Needs the ``serve`` extra (``pip install 'lora-memory-plugin[serve]'``). The client,
:class:`lora_memory_plugin.remote.RemoteMemory`, needs only httpx.
"""
