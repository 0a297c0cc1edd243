"""Regenerate requirements.lock from requirements.in (run by `make lock`).

pip-compile resolves the core, its extras and both integrations (editable, from this tree)
with hashes. The result is rewritten so it installs anywhere and is stable across machines:

- no index, find-links or editable lines (machine paths; the Makefile installs the local
  packages itself, with ``--no-deps``),
- no torch: it is installed first from ``TORCH_SPEC`` (a CPU or CUDA build is the user's
  choice; a bare ``torch`` from the index is a multi-GB CUDA build).

Usage: python tools/lock.py [--pip-compile PATH] [--upgrade]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "requirements.in"
LOCK = ROOT / "requirements.lock"
DROP = ("torch",)  # installed before the lock, from TORCH_SPEC
_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")


def clean(text: str) -> str:
    """Drop editable, index and find-links lines and the packages in ``DROP``."""
    out: list[str] = []
    skipping = False
    for line in text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".").splitlines():
        if line.startswith((" ", "\t")):  # a continuation or a "# via" line of the last entry
            if not skipping:
                out.append(line)
            continue
        skipping = False
        if line.startswith(("-e ", "--extra-index-url", "--index-url", "--find-links")):
            skipping = True
            continue
        if line.startswith(("# WARNING: pip install will require", "# Consider using a hashable")):
            continue
        match = _REQ.match(line)
        if match and match.group(1).lower() in DROP:
            skipping = True
            continue
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip-compile", default="pip-compile")
    parser.add_argument("--upgrade", action="store_true", help="newest versions the ranges allow")
    args = parser.parse_args(argv)
    raw = LOCK.with_suffix(".raw")
    cmd = [
        args.pip_compile,
        "--quiet",
        "--generate-hashes",
        "--allow-unsafe",  # setuptools and wheel: the editable installs build without isolation
        "--strip-extras",
        "--no-emit-index-url",
        "--no-emit-find-links",
        "--no-header",
        "--output-file",
        raw.name,
        SOURCE.name,
    ]
    if args.upgrade:
        cmd.append("--upgrade")
    elif LOCK.exists():
        raw.write_text(LOCK.read_text(encoding="utf-8"), encoding="utf-8")  # keep pins
    subprocess.run(cmd, check=True, cwd=ROOT)
    header = (
        "# The exact set `make` installs (after torch, from TORCH_SPEC), with hashes.\n"
        "# Regenerate: `make lock` (keeps pins, adds what changed) or `make lock-upgrade`.\n"
        "# Input: requirements.in. Do not edit by hand.\n"
    )
    LOCK.write_text(header + clean(raw.read_text(encoding="utf-8")), encoding="utf-8")
    raw.unlink()
    print(f"wrote {LOCK.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
