"""The ``lora-memory`` command line (for people and cron)."""
