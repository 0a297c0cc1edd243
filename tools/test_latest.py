"""`make test-latest`: the suite against the newest versions our ranges allow, and beyond them.

CI installs requirements.lock, so it passes or fails the same on any day. This script answers
the other question: what will users who ``pip install lora-memory-plugin`` today get, and what
breaks? In a fresh ``.venv-latest`` it

1. installs torch (``--torch-spec``), then the package and both integrations with pip's
   ordinary resolution and ``--upgrade-strategy eager`` (the newest versions the ranges allow),
2. lists every package whose version differs from the lock,
3. runs the suites (core, LangChain, LlamaIndex) and records each one's pytest summary,
4. for each direct dependency whose newest release lies outside our range (a cap such as
   ``transformers<5.24``), installs that release over the allowed one (``--no-deps``) and runs
   the suites again: the report says whether the cap can be lifted.

The report is printed and written to ``.venv-latest/report.md``. Exit status: 1 when the
newest *allowed* set fails (the ranges are wrong and need a new cap), else 0; failures with an
excluded release are the expected reason for its cap.

Usage: python tools/test_latest.py [--torch-spec SPEC] [--pytest-args "-m 'not integration'"]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomli is a dependency of ours on 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
LLAMA_INDEX = sorted((ROOT / "integrations" / "llama-index").glob("llama-index-*-lora-memory"))
PYPROJECTS = [ROOT, ROOT / "integrations" / "langchain", *LLAMA_INDEX]
EDITABLES = [
    "-e",
    f"{ROOT}[dev,bench,langchain,serve,ray]",
    "-e",
    f"{ROOT / 'integrations' / 'langchain'}[test]",
    *[arg for d in LLAMA_INDEX for arg in ("-e", f"{d}[test]")],
]
# (name, working directory, pytest arguments): the same three runs as `make test`.
SUITES = [
    ("core", ROOT, ["tests"]),
    ("langchain", ROOT / "integrations" / "langchain", ["tests"]),
    ("llama-index", ROOT, ["integrations/llama-index"]),
]
LOCAL = {tomllib.loads((p / "pyproject.toml").read_text())["project"]["name"] for p in PYPROJECTS}
_NOISE = "is ignored: it is neither a file nor a directory"
_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?),? ?)+)"
    r" in [\d.]+s"
)
# Installed first from --torch-spec (CPU or CUDA is the user's choice): never swapped here.
NOT_PROBED = frozenset({"torch"})


@dataclass
class SuiteResult:
    name: str
    summary: str
    failed: list[str] = field(default_factory=list)
    returncode: int = 0


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        out = "\n".join(
            line for line in (proc.stdout + proc.stderr).splitlines() if _NOISE not in line
        )
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{out[-4000:]}")
    return proc


def canonicalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_requirements() -> list[Requirement]:
    """Every non-local requirement of our pyprojects, extras included (markers that apply)."""
    from packaging.requirements import Requirement

    local = {canonicalize_name(name) for name in LOCAL}
    reqs: list[Requirement] = []
    for path in PYPROJECTS:
        project = tomllib.loads((path / "pyproject.toml").read_text())["project"]
        texts = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            texts.extend(extra)
        for text in texts:
            req = Requirement(text)
            if canonicalize_name(req.name) in local:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            reqs.append(req)
    return reqs


def locked_versions() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", LOCK.read_text(), re.M)
    return {canonicalize_name(name): version for name, version in pins}


def installed_versions(python: Path) -> dict[str, str]:
    proc = run([str(python), "-m", "pip", "list", "--format", "json"])
    return {canonicalize_name(p["name"]): p["version"] for p in json.loads(proc.stdout)}


def newest_release(python: Path, name: str) -> Version | None:
    from packaging.version import Version

    proc = subprocess.run(
        [str(python), "-m", "pip", "index", "versions", name, "--json"],
        text=True,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    versions = [Version(v) for v in json.loads(proc.stdout).get("versions", [])]
    return max((v for v in versions if not v.is_prerelease), default=None)


def run_suites(python: Path, pytest_args: list[str]) -> list[SuiteResult]:
    results = []
    for name, cwd, paths in SUITES:
        cmd = [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-rfE",
            "-p",
            "no:cacheprovider",
            *pytest_args,
            *paths,
        ]
        print(f"  pytest {name}: {shlex.join(cmd[3:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True, check=False)
        lines = proc.stdout.splitlines()
        summary = next(
            (m.group(1).strip(" ,") for line in reversed(lines) if (m := _SUMMARY.match(line))), ""
        )
        failed = [line.split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]
        results.append(
            SuiteResult(name, summary or f"pytest exit {proc.returncode}", failed, proc.returncode)
        )
        print(f"    {results[-1].summary}", file=sys.stderr, flush=True)
    return results


def table(results: list[SuiteResult]) -> list[str]:
    lines = ["| suite | result | failing (first 5) |", "|---|---|---|"]
    for r in results:
        failing = "<br>".join(r.failed[:5]) + (
            f"<br>... {len(r.failed) - 5} more" if len(r.failed) > 5 else ""
        )
        lines.append(f"| {r.name} | {r.summary} | {failing or '-'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(ROOT / ".venv-latest"))
    parser.add_argument("--torch-spec", default="torch==2.13.0")
    parser.add_argument("--pip-version", default="26.3")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    parser.add_argument(
        "--report-only", action="store_true", help="use the existing --venv (no set-up)"
    )
    args = parser.parse_args(argv)
    pytest_args = shlex.split(args.pytest_args)

    venv = Path(args.venv)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    if not args.report_only:  # set up with the standard library, then rerun inside the venv
        shutil.rmtree(venv, ignore_errors=True)
        print(f"creating {venv}", file=sys.stderr, flush=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run([*pip, "install", f"pip=={args.pip_version}"])
        run([*pip, "install", *shlex.split(args.torch_spec)])
        print("installing the newest versions the ranges allow", file=sys.stderr, flush=True)
        run([*pip, "install", "--upgrade", "--upgrade-strategy", "eager", *EDITABLES])
        run([str(venv / "bin" / "lora-memory"), "models", "pull"])
        argv = [str(python), str(Path(__file__).resolve()), *sys.argv[1:], "--report-only"]
        os.execv(str(python), argv)
    from packaging.version import Version

    locked = locked_versions()
    now = installed_versions(python)
    moved = sorted(
        (name, locked[name], version)
        for name, version in now.items()
        if name in locked and locked[name] != version
    )
    report = [
        "# make test-latest",
        "",
        f"pytest arguments: `{args.pytest_args or '(none)'}`; torch: `{args.torch_spec}`.",
        "",
        "## Newest versions the ranges allow, against the lock",
        "",
    ]
    if moved:
        report += ["| package | lock | newest allowed |", "|---|---|---|"]
        report += [f"| {n} | {a} | {b} |" for n, a, b in moved]
    else:
        report.append("Every locked package is already the newest the ranges allow.")
    print("running the suites with the newest allowed set", file=sys.stderr, flush=True)
    allowed = run_suites(python, pytest_args)
    report += ["", "### Suites", "", *table(allowed)]

    excluded: list[tuple[str, str, Version]] = []
    for req in direct_requirements():
        name = canonicalize_name(req.name)
        newest = newest_release(python, req.name)
        if name in NOT_PROBED:
            continue
        outside = newest is not None and not req.specifier.contains(newest)
        if outside and name in now and Version(now[name]) < newest:
            item = (name, str(req.specifier), newest)
            if item not in excluded:
                excluded.append(item)
    report += ["", "## Releases our ranges exclude", ""]
    if not excluded:
        report.append("None: every direct dependency's newest release is inside our range.")
    for name, spec, newest in excluded:
        was = now[name]
        print(f"trying {name}=={newest} (outside {spec})", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [*pip, "install", "--no-deps", f"{name}=={newest}"],
            check=False,
            text=True,
            capture_output=True,
        )
        title = f"### {name} {newest} (our range: `{spec}`; allowed: {was})"
        if proc.returncode != 0:
            why = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")][:2]
            report += [title, "", f"Could not be installed: {' '.join(why) or 'pip failed'}", ""]
            continue
        results = run_suites(python, pytest_args)
        run([*pip, "install", "--no-deps", f"{name}=={was}"])
        report += [title, "", *table(results), ""]

    text = "\n".join(report) + "\n"
    (venv / "report.md").write_text(text)
    print(text)
    broken = [r for r in allowed if r.returncode != 0]
    if broken:
        print(
            "The newest allowed set FAILS: add a cap to the ranges (or fix the code).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
