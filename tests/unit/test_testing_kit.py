"""The test kit's fork guard: ``wait_for_single_thread``."""

from __future__ import annotations

import threading
import time

from lora_memory_plugin.testing import wait_for_single_thread


def test_waits_for_short_lived_threads_and_names_those_left() -> None:
    started = threading.Event()

    def spawner() -> None:  # a thread that starts another before it ends
        threading.Thread(target=time.sleep, args=(0.2,), name="child").start()
        started.set()

    threading.Thread(target=spawner, name="parent").start()
    started.wait()
    assert wait_for_single_thread(5) == []

    release = threading.Event()
    slow = threading.Thread(target=release.wait, name="slow")
    slow.start()
    try:
        t0 = time.monotonic()
        assert wait_for_single_thread(0.2) == ["slow"]
        assert time.monotonic() - t0 < 2
    finally:
        release.set()
        slow.join()
