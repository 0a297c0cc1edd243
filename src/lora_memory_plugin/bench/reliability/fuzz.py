"""The ``fuzz`` part: hypothesis-generated calls to add_turn, add_turns, add_document, search,
get, ask, recall, route and the CLI (``main(argv)``). Only ``LoraMemoryError`` subclasses may
escape (argparse's ``SystemExit`` counts as a usage error, exit 2); records stored before must be
unchanged afterwards, and every accepted write must read back as given.

hypothesis is a dev dependency: it is imported when the part runs, and :func:`run_fuzz` raises
:class:`~lora_memory_plugin.errors.MissingExtraError` without it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from ...cli.main import main
from ...errors import LoraMemoryError, MissingExtraError
from ...types import Record
from ._shared import WORDS

NEEDS_HYPOTHESIS = "the fuzz part needs hypothesis, a dev dependency: pip install -e '.[dev]'"


def require_hypothesis() -> None:
    """Raise :class:`MissingExtraError` (naming the fix) unless hypothesis is installed."""
    if importlib.util.find_spec("hypothesis") is None:
        raise MissingExtraError(NEEDS_HYPOTHESIS)


# Untyped errors already reported (each pinned by a strict xfail test in
# tests/reliability/test_fuzz.py); the fuzzer counts them apart so it can find new ones.
# (operation, exception type, message fragment)
KNOWN_BUGS: list[tuple[str, str, str]] = []  # the five found in memory.py are fixed


def _known(op: str, e: BaseException) -> bool:
    return any(op == o and type(e).__name__ == t and frag in str(e) for o, t, frag in KNOWN_BUGS)


def _snapshot(mem: Any) -> dict[str, dict[str, tuple[str, str]]]:
    snap = {}
    for ns in mem.namespaces():
        snap[ns] = {r.id: (r.text, json.dumps(r.metadata, sort_keys=True)) for r in mem.get(ns)}
    return snap


def fuzz_strategies(cli_dirs: dict[str, str]) -> Any:
    """A hypothesis strategy of (operation, kwargs) pairs, mostly hostile."""
    from hypothesis import strategies as st  # noqa: PLC0415 (dev dependency; when fuzz runs)

    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.binary(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.just(object()),
        st.just(10**400),
    )
    text = st.one_of(
        st.text(max_size=60),
        st.text(alphabet=st.characters(exclude_categories=()), max_size=30),  # any code point
        st.text(  # lone surrogates, NUL, bidi overrides, astral characters
            alphabet=st.sampled_from(
                ["\ud800", "\udfff", "\x00", "\u202e", "🙂", "名", " ", "\n", "a", "$", "/", "."]
            ),
            max_size=20,
        ),
        st.sampled_from(["", " ", "\n\t", "\x00", "\ud800", "ok text", "..", "../../x"]),
        st.builds(lambda n: "y" * n, st.sampled_from([4095, 8192, 8193, 20_001, 200_001])),
    )
    valid_text = st.one_of(
        st.sampled_from(["keep a 3", "keep b 1", "A document kept safe.", "locker code"]),
        st.builds(" ".join, st.lists(st.sampled_from(WORDS), min_size=1, max_size=12)),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
    )
    text_or_junk = st.one_of(valid_text, valid_text, valid_text, text, text, junk)
    valid_ns = st.sampled_from(["keep-a", "keep-b", "fuzz", "../fuzz", "名前", "a/b"])
    namespace = st.one_of(
        valid_ns,
        valid_ns,
        valid_ns,
        st.sampled_from(["nul\x00", "x" * 4097, "", "\ud800"]),
        text_or_junk,
    )
    meta_value = st.one_of(
        st.text(max_size=10),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        junk,
    )
    meta_key = st.one_of(
        st.text(max_size=10),
        st.sampled_from(["kind", "status", "$and", "\ud800", "k" * 129, "owner"]),
        junk.filter(lambda v: v is None or isinstance(v, (int, bool, float, bytes))),
    )
    metadata = st.one_of(st.none(), st.dictionaries(meta_key, meta_value, max_size=3), junk)
    when = st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.datetimes(),
        junk,
    )
    k = st.one_of(
        st.integers(min_value=1, max_value=20),
        st.integers(min_value=1, max_value=20),
        st.integers(min_value=-3, max_value=1200),
        junk,
    )
    good_labels = st.sampled_from(["user", "assistant", "system", "tool", "s1"])
    label = st.one_of(st.none(), st.none(), good_labels, good_labels, text, junk)
    where = st.one_of(
        st.none(),
        st.dictionaries(
            meta_key,
            st.one_of(
                meta_value,
                st.dictionaries(
                    st.sampled_from(["$eq", "$in", "$gt", "$bad", "$and"]), meta_value, max_size=2
                ),
            ),
            max_size=2,
        ),
        junk,
    )

    def opt(**kw: Any) -> Any:  # any subset of the keyword arguments
        return st.fixed_dictionaries({}, optional=kw)

    turn = st.one_of(
        st.fixed_dictionaries(
            {"content": text_or_junk},
            optional={"role": label, "session_id": label, "metadata": metadata, "created_at": when},
        ),
        st.dictionaries(
            st.one_of(
                st.text(max_size=8),
                junk.filter(lambda v: v is None or isinstance(v, (int, bool, float, bytes))),
            ),
            text_or_junk,
            max_size=3,
        ),
        junk,
    )
    ids = st.one_of(st.none(), st.lists(text_or_junk, max_size=3), junk, text)
    ops = {
        "add_turn": st.fixed_dictionaries(
            {"namespace": namespace, "content": text_or_junk},
            optional={"role": label, "session_id": label, "metadata": metadata, "created_at": when},
        ),
        "add_turns": st.fixed_dictionaries(
            {"namespace": namespace, "turns": st.one_of(st.lists(turn, max_size=4), junk, text)},
            optional={"batch_size": k},
        ),
        "add_document": st.fixed_dictionaries(
            {"namespace": namespace, "text": text_or_junk},
            optional={
                "source": label,
                "session_id": label,
                "metadata": metadata,
                "created_at": when,
            },
        ),
        "search": st.fixed_dictionaries(
            {"namespace": namespace, "query": text_or_junk},
            optional={
                "k": k,
                "kind": label,
                "session_id": label,
                "role": label,
                "status": label,
                "since": when,
                "until": when,
                "where": where,
            },
        ),
        "get": st.fixed_dictionaries(
            {"namespace": namespace},
            optional={
                "ids": ids,
                "kind": label,
                "session_id": label,
                "status": label,
                "limit": k,
                "offset": k,
            },
        ),
        "ask": st.fixed_dictionaries(
            {"namespace": namespace, "question": text_or_junk},
            optional={
                "mode": st.one_of(label, st.sampled_from(["rag", "base", "icl", "lora", "hybrid"])),
                "k": k,
                "max_new_tokens": st.one_of(st.sampled_from([1, 2, 4]), k),
            },
        ),
        "recall": st.fixed_dictionaries(
            {"namespace": namespace, "query": text_or_junk},
            optional={"max_new_tokens": st.one_of(st.sampled_from([1, 2, 4]), k)},
        ),
        "route": st.fixed_dictionaries({"namespace": namespace, "query": text_or_junk}),
    }
    api = st.one_of(*[st.tuples(st.just(name), s) for name, s in ops.items()])
    cli = st.tuples(st.just("cli"), cli_argv(cli_dirs))
    return st.one_of(api, api, api, cli)


def cli_argv(dirs: dict[str, str]) -> Any:
    """argv lists for ``main``: real commands (not ``models pull``/``calibrate``, which fetch
    or train for minutes), store dirs good and bad, options right and wrong."""
    from hypothesis import strategies as st  # noqa: PLC0415 (dev dependency; when fuzz runs)

    token = st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            [
                "-n",
                "--namespace",
                "-k",
                "--json",
                "--text",
                "--file",
                "--jsonl",
                "--mode",
                "--role",
                "--session",
                "--kind",
                "--all",
                "--min-records",
                "--chroma-url",
                "--explain",
                "--max-new-tokens",
                "--source",
                "--help",
                "-v",
                "--version",
                "0",
                "-1",
                "999999",
                "nan",
                "rag",
                "base",
                "user",
                "keep-a",
                "fuzz",
                "../x",
                "\x00",
                "http://127.0.0.1:1",
                "ftp://x",
                *dirs.values(),
            ]
        ),
    )
    command = st.sampled_from(
        ["init", "add", "search", "ask", "consolidate", "modules", "status", "models", "bogus", ""]
    )
    store_dir = st.one_of(st.sampled_from(list(dirs.values())), st.text(max_size=10))
    anything = st.builds(
        lambda c, d, rest: [c, d, *rest], command, store_dir, st.lists(token, max_size=6)
    )
    arg = st.one_of(
        st.sampled_from(["keep-a", "fuzz", "locker code", "a/b", "../x", "名前", " ", "-x"]),
        st.text(max_size=15),
    )
    flags = st.lists(
        st.sampled_from(
            [
                ["--json"],
                ["-k", "3"],
                ["-k", "0"],
                ["--kind", "turn"],
                ["--session", "s1"],
                ["--mode", "rag"],
                ["--mode", "base"],
                ["--mode", "lora"],
                ["--explain"],
                ["--role", "assistant"],
                ["--min-records", "1"],
                ["--chroma-url", "http://127.0.0.1:9"],
            ]
        ),
        max_size=3,
    ).map(lambda fs: [t for f in fs for t in f])
    file_arg = st.sampled_from([*dirs.values(), "/nonexistent/file", "\x00"])
    structured = st.one_of(
        st.builds(
            lambda d, n, t, f: ["add", d, "-n", n, "--text", t, *f], store_dir, arg, arg, flags
        ),
        st.builds(
            lambda d, n, t, f: ["add", d, "-n", n, "--file", t, *f], store_dir, arg, file_arg, flags
        ),
        st.builds(
            lambda d, n, t, f: ["add", d, "-n", n, "--jsonl", t, *f],
            store_dir,
            arg,
            file_arg,
            flags,
        ),
        st.builds(lambda d, n, q, f: ["search", d, "-n", n, q, *f], store_dir, arg, arg, flags),
        st.builds(lambda d, n, q, f: ["ask", d, "-n", n, q, *f], store_dir, arg, arg, flags),
        st.builds(lambda d, n, f: ["consolidate", d, "-n", n, *f], store_dir, arg, flags),
        st.builds(lambda d, f: ["modules", d, *f], store_dir, flags),
        st.builds(lambda d, f: ["status", d, *f], store_dir, flags),
        st.builds(lambda d, f: ["init", d, *f], store_dir, flags),
    )
    return st.one_of(structured, structured, anything)


SAFE_CLI_TAIL = {
    # appended last, so argparse keeps them: consolidation stays a few steps, ask short
    "consolidate": ["--max-steps", "2", "--mixture", "original", "--writer", "none"],
    "ask": ["--max-new-tokens", "2"],
}


def _call(mem: Any, op: str, kw: Any) -> Any:
    if op == "cli":
        argv = list(kw)
        if argv and argv[0] == "models":
            argv = ["models", "--bogus"]  # never fetch models; still parse
        argv += SAFE_CLI_TAIL.get(argv[0] if argv else "", [])
        argv = [a for a in argv if a != "-"]  # stdin is not ours to read
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                code = main(argv)
        except SystemExit as e:  # argparse: --help / --version (0) or a usage error (2)
            if e.code not in (0, 2):
                raise AssertionError(f"SystemExit({e.code!r}) from argparse") from e
            return f"exit_{e.code}"
        if not isinstance(code, int) or code not in (0, 1, 2, 3):
            raise AssertionError(f"main returned {code!r}")
        return f"exit_{code}"
    kw = dict(kw)
    ns = kw.pop("namespace")
    return getattr(mem, op)(ns, **kw)


def _expect_roundtrip(mem: Any, op: str, kw: dict[str, Any], result: Any) -> list[str]:
    """An accepted turn must read back as given: text, role, session and metadata."""
    if op != "add_turn":
        return []
    [rec] = mem.get(kw["namespace"], [result])
    assert isinstance(rec, Record)
    bad = []
    if rec.text != kw["content"]:
        bad.append("text differs")
    created = rec.metadata.get("created_at")
    if not isinstance(created, float) or not math.isfinite(created):
        bad.append(f"created_at read back as {created!r}")
    for key, value in (kw.get("metadata") or {}).items():
        got = rec.metadata.get(key)
        same = got == value and type(got) is type(value)
        if not same and not (isinstance(value, float) and math.isnan(value) and got != got):  # noqa: PLR0124 (NaN)
            bad.append(f"metadata[{key!r}] = {value!r} read back as {got!r}")
    return bad


def run_fuzz(
    mem: Any, cli_dirs: dict[str, str], *, examples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Hypothesis-generated calls; returns what escaped untyped and what changed in the store."""
    require_hypothesis()
    # a dev dependency, loaded when the part runs
    from hypothesis import HealthCheck, given, settings  # noqa: PLC0415
    from hypothesis import seed as hyp_seed  # noqa: PLC0415

    before = _snapshot(mem)
    outcomes: Counter[str] = Counter()
    untyped: list[str] = []
    known: Counter[str] = Counter()
    roundtrip: list[str] = []
    written: dict[str, set[str]] = {}
    t0 = time.time()

    @hyp_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_strategies(cli_dirs))
    def one(case: tuple[str, Any]) -> None:
        op, kw = case
        try:
            result = _call(mem, op, kw)
        except LoraMemoryError as e:
            outcomes[f"{op}: {type(e).__name__}"] += 1
            return
        except Exception as e:
            if _known(op, e):
                known[f"{op}: {type(e).__name__}: {str(e)[:60]}"] += 1
                return
            outcomes[f"{op}: UNTYPED {type(e).__name__}"] += 1
            untyped.append(
                f"{op}({_short(kw)}) -> {type(e).__name__}: {e}\n"
                + "".join(traceback.format_exc().splitlines(True)[-6:])
            )
            return
        outcomes[f"{op}: ok" if op != "cli" else f"cli: {result}"] += 1
        if op in ("add_turn", "add_turns", "add_document"):
            ids = [result] if isinstance(result, str) else list(result)
            written.setdefault(kw["namespace"], set()).update(ids)
            roundtrip.extend(
                f"{op}({_short(kw)}): {b}" for b in _expect_roundtrip(mem, op, kw, result)
            )

    # The CLI gets relative store dirs too: keep what they create out of the caller's cwd.
    scratch = Path(tempfile.mkdtemp(prefix="lm-fuzz-cwd-"))
    cwd = Path.cwd()
    os.chdir(scratch)
    try:
        one()
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
    after = _snapshot(mem)
    lost, changed = [], []
    for ns, recs in before.items():
        for rid, value in recs.items():
            if rid not in after.get(ns, {}):
                lost.append(f"{ns!r}/{rid}")
            elif after[ns][rid] != value:
                changed.append(f"{ns!r}/{rid}")
    return {
        "examples": examples,
        "calls": sum(outcomes.values()) + sum(known.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "untyped": len(untyped),
        "untyped_examples": untyped[:20],
        "known_bugs_hit": dict(known),
        "records_before": sum(len(v) for v in before.values()),
        "records_after": sum(len(v) for v in after.values()),
        "lost": len(lost),
        "changed": len(changed),
        "lost_examples": lost[:10],
        "changed_examples": changed[:10],
        "roundtrip_failures": len(roundtrip),
        "roundtrip_examples": roundtrip[:20],
        "seconds": round(time.time() - t0, 1),
        "ok": not untyped and not lost and not changed and not roundtrip,
    }


def _short(kw: Any) -> str:
    return repr(kw)[:300]


def fill_fuzz_store(mem: Any) -> None:
    """Records the fuzzer must leave alone (and may add to)."""
    mem.add_turns("keep-a", [{"content": f"keep a {i}", "metadata": {"n": i}} for i in range(20)])
    mem.add_turns("keep-b", [{"content": f"keep b {i}", "role": "assistant"} for i in range(5)])
    mem.add_document("keep-b", "A document kept safe. " * 40, source="doc.md")
