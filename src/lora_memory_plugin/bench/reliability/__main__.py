"""``python -m lora_memory_plugin.bench.reliability``: the reliability parts (see the package)."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
