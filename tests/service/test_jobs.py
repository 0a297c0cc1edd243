"""Background consolidation in the service: requested jobs, the schedule, and cron alongside."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lora_memory_plugin import InvalidInputError, LoRAMemory
from lora_memory_plugin._filelock import file_lock
from lora_memory_plugin.service.keys import KeyRing
from lora_memory_plugin.store.namespaces import encode_namespace
from lora_memory_plugin.testing import FACTS, FAST, serve_in_thread

pytestmark = pytest.mark.usefixtures("one_thread")


def _wait(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _facts(mem: LoRAMemory, ns: str) -> None:
    mem.add_turns(ns, [{"content": f"Question: {q} Answer: {a}"} for q, a in FACTS])


def test_a_requested_job_runs_in_the_background_once_per_namespace(
    tmp_path: Path, sharp_model_dir: Path
) -> None:
    mem = LoRAMemory.open(tmp_path / "store", base_model=str(sharp_model_dir))
    _facts(mem, "user-a")
    _facts(mem, "other")
    ring = KeyRing(tmp_path / "keys.json")
    key, _ = ring.create(["user-*"])
    with serve_in_thread(mem, ring) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
        r = client.post("/v1/namespaces/user-a/consolidate", json={"options": FAST, "wait": False})
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        again = client.post("/v1/namespaces/user-a/consolidate", json={"wait": False}).json()
        assert again["job"]["job_id"] == job["job_id"]  # one job per namespace at a time
        done = _wait(client, job["job_id"])
        assert done["status"] == "done" and done["report"]["status"] == "consolidated", done
        assert len(mem.modules("user-a")) == 1
        assert [j["job_id"] for j in client.get("/v1/jobs").json()["jobs"]] == [job["job_id"]]
        # a job of a namespace the key may not use is not shown, as if it did not exist
        admin = KeyRing(tmp_path / "keys.json").create(["*"])[0]
        other = httpx.post(
            f"{url}/v1/namespaces/other/consolidate",
            json={"options": FAST, "wait": False},
            headers={"Authorization": f"Bearer {admin}"},
        ).json()["job"]
        assert client.get(f"/v1/jobs/{other['job_id']}").status_code == 404
        assert other["job_id"] not in str(client.get("/v1/jobs").json())


def test_the_schedule_consolidates_due_namespaces_and_cron_can_run_beside_it(
    tmp_path: Path, sharp_model_dir: Path
) -> None:
    mem = LoRAMemory.open(tmp_path / "store", base_model=str(sharp_model_dir))
    _facts(mem, "due")
    mem.add_turn("not-due", "Only one record.")
    lock = mem.path / "locks" / f"consolidate-{encode_namespace('due')}.lock"
    with serve_in_thread(mem, None, consolidate_every=0.2, min_new_records=2) as url:
        client = httpx.Client(base_url=url)
        with file_lock(lock):  # cron is consolidating 'due' right now
            deadline = time.time() + 60
            jobs: list[dict[str, Any]] = []
            while not any(j["status"] == "locked" for j in jobs) and time.time() < deadline:
                time.sleep(0.1)
                jobs = client.get("/v1/jobs").json()["jobs"]
        assert {j["namespace"] for j in jobs} == {"due"}  # 'not-due' holds too few records
        assert jobs[0]["reason"] == "scheduled" and jobs[0]["status"] == "locked"
        assert "another process" in jobs[0]["error"] or "lock" in jobs[0]["error"]
        # once cron lets go, the next check runs it
        deadline = time.time() + 120
        while time.time() < deadline:
            ran = [j for j in client.get("/v1/jobs").json()["jobs"] if j["status"] == "done"]
            if ran:
                break
            time.sleep(0.2)
        assert ran and ran[0]["report"]["namespace"] == "due", client.get("/v1/jobs").json()


def test_consolidate_all_over_http_covers_the_keys_namespaces_each_standing_alone(
    tmp_path: Path, sharp_model_dir: Path
) -> None:
    from lora_memory_plugin.remote import RemoteMemory

    mem = LoRAMemory.open(tmp_path / "store", base_model=str(sharp_model_dir))
    for ns in ("user-a", "user-b", "other"):
        _facts(mem, ns)
    ring = KeyRing(tmp_path / "keys.json")
    key, _ = ring.create(["user-*"])
    lock = mem.path / "locks" / f"consolidate-{encode_namespace('user-b')}.lock"
    with serve_in_thread(mem, ring) as url, file_lock(lock):
        with pytest.raises(InvalidInputError, match="consolidation option"):  # not per namespace
            RemoteMemory(url, api_key=key).consolidate(colour="red")  # type: ignore[call-arg]
        reports = RemoteMemory(url, api_key=key).consolidate(**FAST)
        # the committed module's manifest comes back whole over the wire
        assert RemoteMemory(url, api_key=key).modules("user-a") == mem.modules("user-a")
    assert [(r.namespace, r.status) for r in reports] == [
        ("user-a", "consolidated"),
        ("user-b", "locked"),
    ]
    assert len(mem.modules("user-a")) == 1 and mem.modules("other") == []


def test_schedules_per_namespace_pattern(tmp_path: Path, tiny_model_dir: Path) -> None:
    from lora_memory_plugin.service.jobs import JobRunner, Schedule

    assert Schedule.parse("team-*=600:4") == Schedule("team-*", 600.0, 4)
    assert Schedule.parse("a=b=c=1.5", default_min=3) == Schedule("a=b=c", 1.5, 3)
    for bad in ("team-*", "=60", "x=0", "x=ten", "x=60:0"):
        with pytest.raises(InvalidInputError, match="PATTERN=SECONDS"):
            Schedule.parse(bad)

    mem = LoRAMemory.open(tmp_path / "store", base_model=str(tiny_model_dir))
    for ns, n in (("team-a", 3), ("team-b", 1), ("solo", 3)):
        mem.add_turns(ns, [{"content": f"{ns} fact {i}"} for i in range(n)])
    only_teams = JobRunner(mem, schedules=[Schedule("team-*", 10, 2)])
    assert only_teams._due(now=5, started=0) == []  # not yet ten seconds
    assert only_teams._due(now=10, started=0) == ["team-a"]  # team-b holds 1 < 2; solo: none
    assert only_teams._due(now=15, started=0) == []  # checked at 10: next at 20
    assert only_teams._due(now=20, started=0) == ["team-a"]
    with_default = JobRunner(mem, every_s=30, min_records=3, schedules=[Schedule("team-*", 10, 2)])
    assert with_default.schedule_for("solo") == Schedule("*", 30, 3)
    assert sorted(with_default._due(now=30, started=0)) == ["solo", "team-a"]
