"""Committed LoRA modules on disk: atomic commit, listing, integrity and base-model checks."""
