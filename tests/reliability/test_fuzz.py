"""Item 5: bad input never escapes untyped and never damages what is stored.

Hypothesis generates calls to add_turn, add_turns, add_document, search, get, ask, recall, route
and the CLI's ``main(argv)``: only ``LoraMemoryError`` subclasses may come out (argparse's exit 2
is the CLI's usage error), the records stored before are unchanged afterwards, and an accepted
turn reads back exactly as given. Full counts (10k inputs): ``--part fuzz``.

The fuzzer found five untyped errors in memory.py; they are fixed and each has a regression
test at the end of this file. ``KNOWN_BUGS`` in the fuzz part stays empty.
"""

from __future__ import annotations

import math

import pytest

from lora_memory_plugin import InvalidInputError, LoRAMemory, LoraMemoryError
from lora_memory_plugin.bench.reliability.fuzz import fill_fuzz_store, run_fuzz
from lora_memory_plugin.cli.main import main

pytestmark = pytest.mark.timeout(300)

EXAMPLES = 600


@pytest.fixture
def backend() -> str:
    return "embedded"


@pytest.fixture
def fuzz_store(make_store, tmp_path):
    mem = make_store()
    fill_fuzz_store(mem)
    return mem


def test_generated_inputs_raise_only_typed_errors(fuzz_store, tmp_path, one_thread):
    (tmp_path / "a-file").write_text("not a store")
    dirs = {
        "store": str(fuzz_store.path),
        "new": str(tmp_path / "new"),
        "file": str(tmp_path / "a-file"),
        "nul": str(tmp_path / "a\0b"),
    }
    res = run_fuzz(fuzz_store, dirs, examples=EXAMPLES, seed=0)
    assert res["untyped_examples"] == [], "\n".join(res["untyped_examples"])
    assert res["lost"] == res["changed"] == 0, res
    assert res["roundtrip_examples"] == [], res["roundtrip_examples"]
    assert res["records_after"] >= res["records_before"] == 26
    ok = sum(n for k, n in res["outcomes"].items() if k.endswith(": ok"))
    assert ok >= 10, res["outcomes"]  # the fuzzer also reached the stores and the model


# ---- what the fuzzer found and store/ or the CLI now reject (regressions) -----------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"created_at": math.nan},
        {"created_at": math.inf},
        {"metadata": {"k": math.nan}},
        {"metadata": {"k": -math.inf}},
        {"metadata": {"k": 2**63}},
        {"metadata": {"\ud800": 1}},
        {"metadata": {"k": "\ud800"}},
        {"metadata": {"$and": 1}},
    ],
    ids=[
        "nan-time",
        "inf-time",
        "nan-meta",
        "inf-meta",
        "int65-meta",
        "surrogate-key",
        "surrogate-value",
        "dollar-key",
    ],
)
def test_values_chroma_would_drop_or_change_are_rejected(store, kwargs):
    """Before: NaN/inf read back as None, 2**63 as a float, the others a BackendError."""
    store.add_turn("ns", "kept")
    with pytest.raises(InvalidInputError):
        store.add_turn("ns", "a new turn", **kwargs)
    with pytest.raises(InvalidInputError):
        store.add_turns("ns", [{"content": "another turn", **kwargs}])
    assert [r.text for r in store.get("ns")] == ["kept"]


def test_edge_values_still_round_trip(store):
    meta = {"big": 2**63 - 1, "small": -(2**63), "f": 1e308, "s": "名前 🙂", "b": True}
    rid = store.add_turn("ns", "edges", metadata=meta, created_at=0.0)
    rec = store.get("ns", [rid])[0]
    assert {k: rec.metadata[k] for k in meta} == meta and rec.metadata["created_at"] == 0.0


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, 10**400], ids=["nan", "inf", "-inf", "1e400"]
)
def test_non_finite_time_filters_are_input_errors(store, bad):
    store.add_turn("ns", "x")
    with pytest.raises(InvalidInputError):  # before: BackendError 'Invalid where clause'
        store.search("ns", "x", since=bad)


def test_get_with_no_ids_is_empty(store):
    store.add_turn("ns", "x")
    assert store.get("ns", []) == []  # before: BackendError from Chroma


@pytest.mark.parametrize(
    "argv",
    [
        ["add", "{d}", "-n", "ns", "--jsonl", "{tmp}/missing.jsonl"],
        ["add", "{d}", "-n", "ns", "--jsonl", "{tmp}"],
        ["add", "{d}", "-n", "ns", "--jsonl", "{tmp}/bad\0name"],
        ["add", "{d}", "-n", "ns", "--jsonl", "{tmp}/latin1.jsonl"],
        ["add", "{d}", "-n", "ns", "--file", "{tmp}/bad\0name"],
        ["add", "{tmp}/nul\0dir", "-n", "ns", "--text", "hi"],
        ["init", "{tmp}/nul\0dir"],
        ["search", "{tmp}/nul\0dir", "-n", "ns", "q"],
    ],
    ids=[
        "missing",
        "directory",
        "nul-jsonl",
        "not-utf8",
        "nul-file",
        "nul-dir-add",
        "nul-dir-init",
        "nul-dir-search",
    ],
)
def test_cli_bad_paths_exit_1(store, tmp_path, argv, capsys):
    """Before: FileNotFoundError / IsADirectoryError / ValueError tracebacks."""
    (tmp_path / "latin1.jsonl").write_bytes(b'{"content": "caf\xe9"}\n')
    store.add_turn("ns", "kept")
    argv = [a.format(d=store.path, tmp=tmp_path) for a in argv]
    assert main([*argv, "--json"]) == 1
    assert '"error"' in capsys.readouterr().out
    assert [r.text for r in store.get("ns")] == ["kept"]


# ---- untyped errors memory.py used to raise (found by the fuzzer, now typed) ---------------


def test_get_with_non_iterable_ids(store):
    store.add_turn("ns", "x")
    with pytest.raises(LoraMemoryError):
        store.get("ns", 5)  # TypeError: 'int' object is not iterable


def test_add_turns_with_non_iterable_turns(store):
    with pytest.raises(LoraMemoryError):
        store.add_turns("ns", 5)  # TypeError: 'int' object is not iterable


def test_add_document_with_non_mapping_metadata(store):
    with pytest.raises(LoraMemoryError):
        store.add_document("ns", "some text", metadata=5)  # TypeError in dict(metadata)


def test_created_at_too_large_for_a_float(store):
    with pytest.raises(LoraMemoryError):
        store.add_turn("ns", "x", created_at=10**400)  # OverflowError in float()


def test_open_a_path_with_a_nul_byte(tmp_path):
    with pytest.raises(LoraMemoryError):
        LoRAMemory.open(tmp_path / "a\0b")  # ValueError: embedded null byte (mkdir)
