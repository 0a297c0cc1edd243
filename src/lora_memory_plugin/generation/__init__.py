"""Answer generation: the base model (plus, later, routed LoRA modules) and prompt building."""
