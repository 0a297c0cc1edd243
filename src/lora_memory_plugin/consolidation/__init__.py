"""Consolidation: turning buffered memories into trained LoRA modules."""
