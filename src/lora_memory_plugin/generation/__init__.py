"""Answering: the Generator (base model, adapters, multi-LoRA batches), prompts and `Answerer`."""
