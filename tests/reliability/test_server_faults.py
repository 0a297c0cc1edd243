"""Item 7: the Chroma server dies under a writer.

A real ``chroma run`` is killed (SIGKILL, then SIGTERM) while a thread writes: the write and
reads while it is down raise ``BackendError``; after a restart on the same data every
acknowledged record is there once, each record of the interrupted call is absent or complete,
the retried call completes and search works. Full counts: ``--part server``.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(300), pytest.mark.server]


def test_server_killed_mid_write_then_restarted(rel, tmp_path):
    res = rel.run_server_faults(tmp_path, rounds=2, seed=3)
    assert res["problems"] == [], res
    st = res["stats"]
    assert st["rounds"] == 2 and st["write_error_BackendError"] == 2
    assert st["killed_with_SIGKILL"] == 1 and st["killed_with_SIGTERM"] == 1
    for op in ("search", "get", "count", "add_turn"):
        assert st[f"down_{op}_BackendError"] == 2
    assert res["records_final"] == res["records_acknowledged"] >= 30
    assert res["error_seconds_max"] < 30  # a dead server is an error, not a hang
