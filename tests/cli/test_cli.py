"""The CLI in-process (fast) and as a real subprocess (exit codes, --json, stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lora_memory_plugin.cli.main import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store_dir(tmp_path, tiny_model_dir, capsys):
    d = tmp_path / "mem"
    code, out, _ = run(capsys, "init", d, "--base-model", tiny_model_dir, "--json")
    assert code == 0 and json.loads(out)["created"] is True
    return d


def test_init_is_idempotent_and_refuses_changes(store_dir, capsys):
    code, out, _ = run(capsys, "init", store_dir, "--json")
    assert code == 0 and json.loads(out)["created"] is False
    code, out, _err = run(capsys, "init", store_dir, "--base-model", "other", "--json")
    assert code == 1 and json.loads(out)["error"] == "InvalidInputError"


def test_add_search_status(store_dir, tmp_path, capsys):
    assert (
        run(
            capsys,
            "add",
            store_dir,
            "-n",
            "u1",
            "--text",
            "My locker code is 4471.",
            "--session",
            "s1",
        )[0]
        == 0
    )
    doc = tmp_path / "handbook.md"
    doc.write_text("The office opens at 8am. Parking is in the basement.")
    code, out, _ = run(capsys, "add", store_dir, "-n", "u1", "--file", doc, "--json")
    assert code == 0 and json.loads(out)["records"] == 1
    jl = tmp_path / "turns.jsonl"
    jl.write_text(
        "\n".join(json.dumps({"content": f"turn {i}", "role": "assistant"}) for i in range(5))
        + "\n"
        + json.dumps({"text": "a doc line"})
        + "\n"
    )
    code, out, _ = run(capsys, "add", store_dir, "-n", "u1", "--jsonl", jl, "--json")
    assert code == 0 and json.loads(out)["records"] == 6

    code, out, _ = run(capsys, "search", store_dir, "-n", "u1", "locker", "-k", "1", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and hits[0]["text"] == "My locker code is 4471."
    assert hits[0]["metadata"]["session_id"] == "s1"
    code, out, _ = run(capsys, "search", store_dir, "-n", "u1", "parking", "--kind", "document")
    assert code == 0 and "basement" in out

    code, out, _ = run(capsys, "status", store_dir, "--json")
    st = json.loads(out)
    assert code == 0 and st["records"] == 8 and st["namespaces"][0]["namespace"] == "u1"


def test_bad_jsonl_writes_nothing(store_dir, tmp_path, capsys):
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"content": "fine"}\n{"content": ""}\n')
    code, out, err = run(capsys, "add", store_dir, "-n", "u1", "--jsonl", jl)
    assert code == 1 and "turns[1]" in err
    jl.write_text('{"content": "fine"}\nnot json\n')
    code, _, err = run(capsys, "add", store_dir, "-n", "u1", "--jsonl", jl)
    assert code == 1 and "bad.jsonl:2" in err
    code, out, _ = run(capsys, "status", store_dir, "--json")
    assert json.loads(out)["records"] == 0


def test_ask_json(store_dir, capsys):
    run(capsys, "add", store_dir, "-n", "u1", "--text", "My locker code is 4471.")
    code, out, _ = run(
        capsys,
        "ask",
        store_dir,
        "-n",
        "u1",
        "locker code?",
        "--mode",
        "rag",
        "--max-new-tokens",
        "2",
        "--json",
    )
    ans = json.loads(out)
    assert code == 0 and ans["mode"] == "rag" and ans["sources"][0]["text"].startswith("My locker")
    assert set(ans["timings"]) >= {"generate", "total"}
    code, out, err = run(
        capsys, "ask", store_dir, "-n", "u1", "locker code?", "--max-new-tokens", "2"
    )
    assert code == 0 and "note:" in err and "consolidate" in err  # hybrid fell back to rag


def test_errors_exit_1_with_a_message(store_dir, tmp_path, capsys):
    code, out, err = run(capsys, "search", store_dir, "-n", "ghost", "q", "--json")
    assert code == 1 and json.loads(out)["error"] == "UnknownNamespaceError"
    assert "ghost" in err
    code, _, err = run(capsys, "search", tmp_path / "no-store", "-n", "x", "q")
    assert code == 1 and "lora-memory init" in err
    assert not (tmp_path / "no-store").exists()
    code, _, err = run(capsys, "add", store_dir, "-n", "u1", "--text", "   ")
    assert code == 1 and "empty" in err
    code, _, err = run(capsys, "search", store_dir, "-n", "u1", "q", "-k", "0")
    assert code == 1


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["add", "dir"])
    assert ei.value.code == 2


def test_console_script_subprocess(store_dir):
    exe = os.path.join(os.path.dirname(sys.executable), "lora-memory")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("lora-memory ")
    r = subprocess.run(
        [exe, "status", str(store_dir), "--json"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0 and json.loads(r.stdout)["records"] == 0
    r = subprocess.run(
        [exe, "status", str(store_dir / "missing"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    for cmd in ("init", "add", "search", "ask", "status", "models"):
        assert cmd in r.stdout


def test_inputs_are_read_with_bounds(store_dir, tmp_path, capsys):
    """A document over buffer.max_document_chars is refused after reading one character past
    the limit; a JSONL line or a question line over its limit names the line; nothing is added."""
    from lora_memory_plugin.memory import LoRAMemory

    LoRAMemory.open(store_dir).update_config(buffer={"max_document_chars": 100})
    big = tmp_path / "big.txt"
    big.write_text("x" * 5000, encoding="utf-8")
    code, out, _ = run(capsys, "add", store_dir, "-n", "u", "--file", big, "--json")
    assert code == 1 and "max_document_chars (100 characters)" in json.loads(out)["message"]
    line = tmp_path / "one-line.jsonl"
    line.write_text('{"content": "' + "y" * 2_000_000 + '"}\n', encoding="utf-8")
    code, out, _ = run(capsys, "add", store_dir, "-n", "u", "--jsonl", line, "--json")
    assert code == 1 and "1: line is over" in json.loads(out)["message"]
    qs = tmp_path / "qs.txt"
    qs.write_text("Where?\n" + "z" * 10_000 + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "ask-many", store_dir, "-n", "u", qs, "--json")
    assert code == 1 and f"{qs}:2: line is over" in json.loads(out)["message"]
    assert "u" not in LoRAMemory.open(store_dir).namespaces()


def test_ask_many_streams_chunks_into_one_json_object(store_dir, tmp_path, capsys, monkeypatch):
    from lora_memory_plugin.cli.commands import ask

    monkeypatch.setattr(ask, "ASK_MANY_CHUNK", 2)
    calls: list[int] = []
    from lora_memory_plugin.memory import LoRAMemory

    real = LoRAMemory.ask_many

    def counting(self, namespace, questions, **kw):
        calls.append(len(questions))
        return real(self, namespace, questions, **kw)

    monkeypatch.setattr(LoRAMemory, "ask_many", counting)
    run(capsys, "add", store_dir, "-n", "u", "--text", "My locker code is 4471.")
    qs = tmp_path / "qs.txt"
    qs.write_text("\n".join(f"What is question {i}?" for i in range(5)) + "\n\n", encoding="utf-8")
    code, out, _ = run(
        capsys, "ask-many", store_dir, "-n", "u", qs, "--mode", "rag", "--max-new-tokens", "2",
        "--json",
    )  # fmt: skip
    assert code == 0 and calls == [2, 2, 1]
    rows = json.loads(out)["answers"]
    assert [r["question"] for r in rows] == [f"What is question {i}?" for i in range(5)]
    bad = tmp_path / "bad.txt"
    bad.write_text("Fine?\n" + "z" * 10_000 + "\n", encoding="utf-8")  # checked before any answer
    calls.clear()
    code, out, _ = run(capsys, "ask-many", store_dir, "-n", "u", bad, "--json")
    assert code == 1 and calls == [] and json.loads(out)["error"] == "InvalidInputError"
