"""Two processes, one embedded store: the agent and the cron job must see each other's writes
and never lose one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lora_memory_plugin import LoRAMemory

pytestmark = pytest.mark.timeout(300)


def _run(code: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_search_sees_records_written_by_another_process(tmp_path):
    store = tmp_path / "shared"
    a = LoRAMemory.open(store)
    a.add_turn("ns", "written by A first")
    assert [h.text for h in a.search("ns", "written by", k=5)] == ["written by A first"]
    _run(f"""
        from lora_memory_plugin import LoRAMemory
        b = LoRAMemory.open({str(store)!r})
        b.add_turns("ns", [{{"content": f"written by B number {{i}}"}} for i in range(20)])
        b.add_turn("other", "B opened a namespace")
    """)
    hits = a.search("ns", "written by B number 7", k=1)
    assert hits[0].text == "written by B number 7"
    assert a.count("ns") == 21 and "other" in a.namespaces()
    a.add_turn("ns", "A after B")
    out = _run(f"""
        from lora_memory_plugin import LoRAMemory
        b = LoRAMemory.open({str(store)!r})
        print(b.count("ns"), b.search("ns", "A after B", k=1)[0].text)
    """)
    assert out.strip() == "22 A after B"


def test_concurrent_writers_lose_nothing(tmp_path):
    store = tmp_path / "shared"
    LoRAMemory.open(store).add_turn("ns", "seed")
    code = f"""
        import sys
        from lora_memory_plugin import LoRAMemory
        m = LoRAMemory.open({str(store)!r})
        w = sys.argv[1]
        for i in range(40):
            m.add_turn("ns", f"writer {{w}} turn {{i}}")
        m.add_turns("ns", [{{"content": f"writer {{w}} batch {{i}}"}} for i in range(40)])
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(w)], stderr=subprocess.PIPE
        )
        for w in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
    m = LoRAMemory.open(store)
    texts = [r.text for r in m.get("ns")]
    assert len(texts) == 1 + 3 * 80 == len(set(texts))
    for w in range(3):
        assert m.search("ns", f"writer {w} batch 33", k=1)[0].text == f"writer {w} batch 33"


def test_the_write_stamp_never_follows_a_planted_link(tmp_path):
    """The stamp's temp file has a predictable name: a symlink planted there is replaced,
    and the file it pointed at is left as it was."""
    import os

    from lora_memory_plugin.store.client import EmbeddedChroma

    chroma = EmbeddedChroma(tmp_path / "store")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    chroma.stamp_path.parent.mkdir(parents=True, exist_ok=True)
    planted = chroma.stamp_path.with_name(f".{chroma.stamp_path.name}.{os.getpid()}.tmp")
    planted.symlink_to(victim)
    with chroma.writing():
        pass
    assert victim.read_text() == "precious"
    assert chroma.stamp_path.is_file() and not chroma.stamp_path.is_symlink()
