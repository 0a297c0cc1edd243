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
    # other tests may leave long-lived threads of their own (tqdm's monitor): only ours count
    left = wait_for_single_thread(1)
    assert not {"parent", "child"} & set(left), left

    release = threading.Event()
    slow = threading.Thread(target=release.wait, name="slow")
    slow.start()
    try:
        t0 = time.monotonic()
        assert "slow" in wait_for_single_thread(0.2)
        assert time.monotonic() - t0 < 2
    finally:
        release.set()
        slow.join()
