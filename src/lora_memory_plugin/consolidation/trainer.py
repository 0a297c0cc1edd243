"""LoRA knowledge trainer: memorise QA pairs (or plain passages) into a LoRA adapter, fast.

:func:`train_lora` takes a base model (a local dir, a Hugging Face id, ``"default"``, or a loaded
:class:`~lora_memory_plugin.generation.backend.Generator`), a list of :class:`Example` and a
:class:`TrainConfig`, and returns a :class:`TrainResult`; :func:`save_adapter` writes the adapter
as a plain PEFT directory. What makes it fast:

- Prompts are rendered by ``Generator.render``, the very function that answers later, so
  training and inference see the same tokens. A QA example is supervised on its answer and the
  template's end-of-turn token only.
- Logits are computed only at supervised positions (a ``logits_to_keep`` mask): the vocabulary
  projection is a fifth of SmolLM2's weights and most positions are prompt.
- Batches are length-bucketed (little padding), and the token prefix shared by every row of a
  batch (system prompt, the question's opening words) runs once; its KV cache is repeated over
  the batch. That is exact, gradients included: on PhoneBook (61 tokens a row, 38 shared) a
  batch of 16 runs 406 tokens instead of 976, and a step is 2.6x faster than a plain one.
- With LoRA on the top layers only (``top_layers``), the frozen layers below run once per
  example (:class:`.frozen.FrozenBottom`) and a step runs the top layers alone.
- Early stopping on teacher-forced recall: an example is recalled iff the argmax at every answer
  position is the answer token, i.e. what greedy decoding will produce. The training forward
  passes estimate it for free (up to one epoch stale); the exact eval pass (eval mode, inference
  mode) runs only once that estimate reaches half the target.

torch, transformers and peft are imported inside functions, so importing this module is light.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidInputError
from ..generation.backend import Generator
from ..generation.prefix import common_prefix
from .frozen import FrozenBottom

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

IGNORE = -100
"""Label of positions without loss (prompt and padding)."""
EVAL_GATE = 0.5
"""The exact recall pass runs once the free in-training estimate reaches this share of target."""
StopReason = Literal["target", "max_steps", "max_epochs", "max_seconds", "plateau", "guard"]
SoftTargets = tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]
"""Per answer token, a teacher's top-k next-token ``(ids, probabilities)``."""


@dataclass
class TrainConfig:
    """How to train one LoRA module. Defaults are tuned for memorising facts quickly.

    ``alpha=None`` means alpha = rank, the paper's choice: the LoRA scale alpha/r stays 1 at every
    rank, so ``lr`` keeps its meaning when the rank changes (with Adam, alpha/r acts as an lr
    multiplier). Validation raises :class:`~lora_memory_plugin.errors.InvalidInputError`.
    """

    rank: int = field(default=16, metadata={"help": "LoRA rank r: capacity grows with it."})
    alpha: int | None = field(default=None, metadata={"help": "LoRA alpha; None: = rank."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (memorising: 0)."})
    target_modules: str | tuple[str, ...] = field(
        default="all-linear", metadata={"help": "'all-linear' (all but the LM head) or names."}
    )
    top_layers: int | None = field(
        default=None,
        metadata={
            "help": "LoRA on the top N transformer layers only: the frozen layers below run "
            "once per example (FrozenBottom); None, or N >= the model's layers: every layer."
        },
    )
    lr: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    batch_size: int = field(default=16, metadata={"help": "Examples per optimizer step."})
    max_steps: int = field(default=2000, metadata={"help": "Step budget."})
    max_epochs: int | None = field(
        default=60,
        metadata={
            "help": "Epoch budget for data without QA examples: passages have no recall to "
            "stop on (QA data stops at target_recall or max_steps)."
        },
    )
    max_seconds: float | None = field(default=None, metadata={"help": "Wall-time budget."})
    target_recall: float = field(default=1.0, metadata={"help": "Stop at this QA recall."})
    eval_every_epochs: int = field(default=1, metadata={"help": "Check recall every N epochs."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear lr warmup steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip grads; None: off."})
    share_prefix: bool = field(default=True, metadata={"help": "Run a common prefix once."})
    patience: int | None = field(
        default=None,
        metadata={
            "help": "With train_lora(evaluate=...): stop after this many evaluations without a "
            "better score, keeping the best weights (of the latest evaluation among equal "
            "scores: trained longer); None: until the target or a budget."
        },
    )
    patience_below: int | None = field(
        default=None,
        metadata={
            "help": "Patience while the best held-out score is under pass_score (None: "
            "patience): a module that would not pass its gate yet gets more tries."
        },
    )
    pass_score: float | None = field(
        default=None,
        metadata={"help": "The held-out score a module needs to pass its gate (for patience)."},
    )
    evaluate_from: float | None = field(
        default=None,
        metadata={
            "help": "With train_lora(evaluate=...): evaluate once exact recall reaches this "
            "(None: target_recall). Soft targets keep argmax margins small, so full recall "
            "may never come: evaluate earlier and let patience stop."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seeds LoRA init and batch order."})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', ..."})

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> InvalidInputError:
            return InvalidInputError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("rank", "lr", "batch_size", "max_steps", "eval_every_epochs"):
            if not getattr(self, name) > 0:
                raise bad(name, "> 0")
        for name in (
            "alpha",
            "max_epochs",
            "max_seconds",
            "max_grad_norm",
            "patience",
            "top_layers",
        ):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise bad(name, "> 0 or None")
        for name in ("warmup_steps", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise bad(name, ">= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "in [0, 1)")
        if not 0.0 < self.target_recall <= 1.0:
            raise bad("target_recall", "in (0, 1]")
        if self.evaluate_from is not None and not 0.0 < self.evaluate_from <= 1.0:
            raise bad("evaluate_from", "in (0, 1] or None")
        if not self.target_modules:
            raise bad("target_modules", "'all-linear' or module names")


@dataclass(frozen=True)
class Example:
    """One thing to memorise.

    Args:
        answer: For ``kind="qa"`` the assistant's answer; for ``kind="text"`` the passage.
        prompt: ``(role, content)`` pairs (or ``{"role", "content"}`` dicts) rendered with the
            chat template, e.g. system + user. Must be empty for ``kind="text"``.
        kind: ``"qa"``: loss on the answer + end-of-turn tokens only. ``"text"``: loss on every
            token of a plain passage, no template (the 'original' strategy).
        soft: Logit-level distillation targets for a ``"qa"`` example: for each answer token
            (end-of-turn included) a teacher's top-k next-token ``(ids, probabilities)``
            (:func:`teacher_distributions`). The loss at those positions is then the
            cross-entropy to that distribution (= KL up to the teacher's entropy) instead of
            to the answer token alone.
    """

    answer: str
    prompt: tuple[tuple[str, str], ...] = ()
    kind: Literal["qa", "text"] = "qa"
    soft: SoftTargets = ()

    def __post_init__(self) -> None:
        pairs = tuple(
            (m["role"], m["content"]) if isinstance(m, Mapping) else (m[0], m[1])
            for m in self.prompt
        )
        object.__setattr__(self, "prompt", pairs)
        if self.kind not in ("qa", "text"):
            raise InvalidInputError(f"kind must be 'qa' or 'text', got {self.kind!r}")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise InvalidInputError(f"answer must be a non-empty string, got {self.answer!r}")
        if self.kind == "qa" and not pairs:
            raise InvalidInputError("a 'qa' example needs prompt messages (system + user)")
        if self.kind == "text" and pairs:
            raise InvalidInputError("a 'text' example takes no prompt: put the passage in answer")
        if self.soft and self.kind != "qa":
            raise InvalidInputError("soft targets are for 'qa' examples only")
        for ids, probs in self.soft:
            if not ids or len(ids) != len(probs):
                raise InvalidInputError("each soft target needs as many ids as probabilities")

    @classmethod
    def qa(cls, question: str, answer: str, system: str | None = None) -> Example:
        """A question/answer pair, with an optional system message first."""
        prompt = ((("system", system),) if system is not None else ()) + (("user", question),)
        return cls(answer=answer, prompt=prompt)

    @classmethod
    def text(cls, passage: str) -> Example:
        """A plain passage trained on every token."""
        return cls(answer=passage, kind="text")

    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages for ``Generator.render``."""
        return [{"role": role, "content": content} for role, content in self.prompt]


@dataclass
class TrainResult:
    """What a training run produced and what it cost.

    ``model`` is the trained ``peft.PeftModel`` (eval mode), or None when a caller's Generator
    was trained (its model gets its LoRA layers removed again); ``adapter_state`` always holds
    the LoRA weights on CPU, keyed as in ``adapter_model.safetensors``.
    """

    model: Any
    adapter_state: dict[str, torch.Tensor]
    lora_config: Any  # the peft.LoraConfig trained with
    base_model: str  # name for adapter_config.json: a Hugging Face id or local:<dir name>
    steps: int
    epochs: int
    seconds: float  # training wall time, recall passes included, model load excluded
    train_tokens: int  # non-pad tokens trained on (a shared prefix counts once per row)
    tokens_per_second: float
    recall: float | None
    """Teacher-forced recall of the returned weights on the QA examples (None: no QA): an exact
    pass, or, when they are the weights of an ``evaluate`` call, the share their epoch's own
    training batches recalled (the check that call followed; no second pass over the data)."""
    recall_history: list[tuple[int, float, float]]
    """(step, seconds, recall) per check: an exact pass, or with ``evaluate`` the epoch's own
    training batches; the last entry is of the returned weights."""
    stopped_because: StopReason
    padding_fraction: float  # share of pad tokens in the training batches
    loss: float  # of the last step
    eval_history: list[tuple[int, float, float]] = field(default_factory=list)
    """(step, seconds, score) per call of ``train_lora(evaluate=...)``."""
    held_out: float | None = None
    """``evaluate``'s score of the returned weights (None: they were not evaluated as they are,
    e.g. a budget stopped training after the last evaluation)."""
    kept_evaluation: int | None = None
    """Which ``evaluate`` call (1-based, in ``eval_history``) judged the returned weights; None
    when none did. ``guard`` was called once right before each of those calls."""
    guarded: str | None = None
    """Why ``train_lora(guard=...)`` refused the weights that stopped training (None: it never
    did); the returned weights are the best evaluated ones before that."""


@dataclass(frozen=True)
class _Item:
    ids: list[int]
    labels: list[int]
    qa: bool
    soft: SoftTargets = ()  # one per supervised label


@dataclass(frozen=True)
class _Batch:
    ids: torch.Tensor  # [B, T] right-padded with pad id
    mask: torch.Tensor  # [B, T] 1 on tokens, 0 on pads
    labels: torch.Tensor  # [B, T] IGNORE on prompt and pads
    qa: torch.Tensor  # [B] bool: row counts for recall
    prefix: int  # leading tokens identical in every row, run once
    tokens: int  # non-pad tokens
    pads: int
    soft_ids: torch.Tensor | None = None  # [N, k] teacher top-k ids per supervised position
    soft_probs: torch.Tensor | None = None  # [N, k] their probabilities; a row of 0: none


def end_of_turn(generator: Generator) -> str:
    """The string the chat template closes an assistant turn with (ChatML: ``<|im_end|>``)."""
    sentinel = "lora-memory-answer-sentinel"
    convo = [{"role": "user", "content": "q"}, {"role": "assistant", "content": sentinel}]
    text = str(generator.tokenizer.apply_chat_template(convo, tokenize=False))
    end = text.split(sentinel, 1)[1].strip() if sentinel in text else ""
    return end or str(generator.tokenizer.eos_token)


def tokenize(generator: Generator, examples: Sequence[Example]) -> list[_Item]:
    """Prompt ids (labels IGNORE) + answer ids with the end-of-turn token (supervised)."""
    tok, end = generator.tokenizer, end_of_turn(generator)

    def enc(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    items = []
    for ex in examples:
        if ex.kind == "text":
            ids = enc(ex.answer)
            items.append(_Item(ids, list(ids), qa=False))
        else:
            prompt, answer = enc(generator.render(ex.messages())), enc(ex.answer + end)
            if ex.soft and len(ex.soft) != len(answer):
                raise InvalidInputError(
                    f"example {len(items)} has {len(ex.soft)} soft targets for {len(answer)} "
                    "answer tokens: make them with teacher_distributions on the same tokenizer"
                )
            items.append(
                _Item(prompt + answer, [IGNORE] * len(prompt) + answer, qa=True, soft=ex.soft)
            )
        if len(items[-1].ids) < 2 or len(items[-1].ids) > generator.context_window:
            raise InvalidInputError(
                f"example {len(items) - 1} has {len(items[-1].ids)} tokens: need 2 to "
                f"{generator.context_window} (the model's context window)"
            )
    return items


def make_batches(
    items: Sequence[_Item], batch_size: int, rng: random.Random | None
) -> list[list[int]]:
    """Length buckets: sort indices by length (ties shuffled), chunk, shuffle the chunk order."""
    order = list(range(len(items)))
    if rng is not None:
        rng.shuffle(order)
    order.sort(key=lambda i: len(items[i].ids))  # stable: equal lengths keep the shuffle
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


SPLIT_LENGTH_RATIO = 1.5
"""A step's rows run as separate sub-batches where a row is this much longer than the shortest
of its sub-batch: the short ones are not padded to the long ones' width."""


def split_step(items: Sequence[_Item], idx: Sequence[int]) -> list[list[int]]:
    """The rows of one optimizer step as sub-batches that run one forward each.

    Prompted rows (a chat template: a long common prefix, run once per sub-batch) and text rows
    (supervised from their first token: nothing to share) go apart; within each, rows sorted by
    length are cut where one is :data:`SPLIT_LENGTH_RATIO` times the sub-batch's shortest. The
    loss is the mean over the step's supervised positions however it is split, so the gradient
    is the one a single padded batch gives. On the Lisbon story's longest batch a step runs a
    third fewer token slots (1,147 vs 1,720: less padding, and the system prompt once per
    sub-batch instead of once per row) and takes 5.4 s instead of 7.3 s.
    """

    def text(i: int) -> bool:
        return len(items[i].labels) > 1 and items[i].labels[1] != IGNORE

    parts: list[list[int]] = []
    for kind in (False, True):
        rows = sorted((i for i in idx if text(i) == kind), key=lambda i: len(items[i].ids))
        for i in rows:
            if (
                parts
                and parts[-1]
                and text(parts[-1][0]) == kind
                and (len(items[i].ids) <= SPLIT_LENGTH_RATIO * len(items[parts[-1][0]].ids))
            ):
                parts[-1].append(i)
            else:
                parts.append([i])
    return parts


def shared_prefix(rows: Sequence[_Item]) -> int:
    """Tokens common to all rows, ending before the first position whose logit is supervised."""
    # the logit at position t predicts label t + 1: the prefix must stop before first label - 1
    limit = min(next(j for j in range(1, len(r.labels)) if r.labels[j] != IGNORE) for r in rows) - 1
    return max(0, min(limit, common_prefix([r.ids for r in rows])))


def collate(rows: Sequence[_Item], pad_id: int, share_prefix: bool, device: Any) -> _Batch:
    """Right-pad rows into tensors; pads get attention 0 and label IGNORE."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids, mask, labels = [], [], []
    for r in rows:
        pad = width - len(r.ids)
        ids.append(r.ids + [pad_id] * pad)
        mask.append([1] * len(r.ids) + [0] * pad)
        labels.append(r.labels + [IGNORE] * pad)
    tokens = sum(len(r.ids) for r in rows)
    soft_ids = soft_probs = None
    if any(r.soft for r in rows):  # aligned with supervised positions, row-major
        k = max(len(top) for r in rows for top, _ in r.soft)
        sid: list[list[int]] = []
        spr: list[list[float]] = []
        for r in rows:
            n = sum(t != IGNORE for t in r.labels[1:])  # positions whose next token is labelled
            targets = list(r.soft) if r.soft else [((0,), (0.0,))] * n
            for top, probs in targets:
                sid.append(list(top) + [0] * (k - len(top)))
                spr.append(list(probs) + [0.0] * (k - len(probs)))
        soft_ids = torch.tensor(sid, device=device)
        soft_probs = torch.tensor(spr, device=device, dtype=torch.float32)
    return _Batch(
        ids=torch.tensor(ids, device=device),  # [B, T]
        mask=torch.tensor(mask, device=device),  # [B, T]
        labels=torch.tensor(labels, device=device),  # [B, T]
        qa=torch.tensor([r.qa for r in rows], device=device),  # [B]
        prefix=shared_prefix(rows) if share_prefix and len(rows) > 1 else 0,
        tokens=tokens,
        pads=width * len(rows) - tokens,
        soft_ids=soft_ids,
        soft_probs=soft_probs,
    )


def next_token_targets(batch: _Batch) -> torch.Tensor:
    """``[B, T]``: the label position t predicts (the next token's), IGNORE where none."""
    import torch.nn.functional as F  # noqa: N812

    return F.pad(batch.labels[:, 1:], (0, 1), value=IGNORE)


def supervised_logits(model: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at supervised positions only, running the shared prefix once.

    Returns:
        ``(logits [N, V], targets [N], rows [N])`` for the N positions whose next token has a
        label, in row-major order.
    """
    targets = next_token_targets(batch)  # [B, T]
    p, cache = batch.prefix, None
    if p:  # one row of prefix, its KV cache repeated: [1, heads, p, dim] -> [B, heads, p, dim]
        cache = model(input_ids=batch.ids[:1, :p], use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(batch.ids.shape[0])
    keep = targets[:, p:] != IGNORE  # [B, T - p]
    out = model(
        input_ids=batch.ids[:, p:],  # [B, T - p]
        attention_mask=batch.mask,  # [B, T]: covers the cached prefix too
        past_key_values=cache,
        use_cache=cache is not None,
        logits_to_keep=keep,
    )
    return out.logits, targets[:, p:][keep], keep.nonzero()[:, 0]  # [N, V], [N], [N]


def token_loss(logits: torch.Tensor, targets: torch.Tensor, batch: _Batch) -> torch.Tensor:
    """Mean loss over supervised positions: cross-entropy to the label, or -- where the batch has
    a teacher's top-k distribution -- cross-entropy to that distribution (its KL to the student
    up to the teacher's entropy, a constant; the tail beyond top-k is dropped, as Cartridges'
    top-k distillation does)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    logp = F.log_softmax(logits.float(), dim=-1)  # [N, V]
    hard = -logp.gather(1, targets[:, None]).squeeze(1)  # [N]
    if batch.soft_ids is None or batch.soft_probs is None:
        return hard.mean()
    probs = batch.soft_probs / batch.soft_probs.sum(-1, keepdim=True).clamp_min(1e-9)  # [N, k]
    soft = -(probs * logp.gather(1, batch.soft_ids)).sum(-1)  # [N]
    has = batch.soft_probs.sum(-1) > 0  # [N]
    return torch.where(has, soft, hard).mean()


def teacher_distributions(
    gen: Generator, examples: Sequence[Example], k: int = 20, batch_size: int = 16
) -> list[SoftTargets]:
    """The bare base model's top-``k`` next-token distribution at each answer token of each
    ``"qa"`` example (teacher-forced on the example's answer, end-of-turn included), tokenized
    as :func:`train_lora` will: the ``soft`` targets for logit-level distillation.

    The teacher's prompt is the example's own (for context distillation: the records in context);
    pass the returned targets to ``Example(..., soft=...)`` on the student's prompt.
    """
    import torch

    if any(ex.kind != "qa" for ex in examples):
        raise InvalidInputError("teacher distributions are for 'qa' examples only")
    items = tokenize(gen, examples)
    pad_id = int(gen.tokenizer.pad_token_id)
    out: dict[int, SoftTargets] = {}
    with gen.lock, torch.inference_mode():
        gen._use_adapter(None)  # the bare base model reads
        for idx in make_batches(items, batch_size, None):
            batch = collate([items[i] for i in idx], pad_id, True, gen.device)
            logits, _, rows = supervised_logits(gen.model, batch)  # [N, V], [N], [N]
            top = torch.softmax(logits.float(), -1).topk(k, dim=-1)  # [N, k]
            ids, probs = top.indices.tolist(), top.values.tolist()
            for r, i in enumerate(idx):
                at = (rows == r).nonzero()[:, 0].tolist()
                out[i] = tuple((tuple(ids[j]), tuple(round(p, 6) for p in probs[j])) for j in at)
    return [out[i] for i in range(len(items))]


def count_recalled(
    logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, qa: torch.Tensor
) -> int:
    """QA rows whose argmax is right at every supervised position."""
    import torch

    wrong = (logits.argmax(-1) != targets).float()  # [N]
    per_row = torch.zeros(qa.shape[0], device=wrong.device).index_add_(0, rows, wrong)  # [B]
    return int(((per_row == 0) & qa).sum())


def train_lora(
    base_model: str | Path | Generator,
    examples: Sequence[Example],
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    evaluate: Callable[[Any, Generator], float] | None = None,
    guard: Callable[[Any], str | None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter until it recalls the QA examples, or a budget runs out.

    Args:
        base_model: ``"default"``, a model dir, a Hugging Face id, or a loaded Generator. A
            Generator's model is trained in place under its lock and restored afterwards.
        examples: What to memorise.
        config: Hyper-parameters and budgets (defaults: :class:`TrainConfig`).
        progress: Show a tqdm bar on stderr.
        evaluate: A score in [0, 1] of the model in training (e.g. agreement with a teacher on
            held-out questions, :func:`.gate.held_out_evaluator`); when given, training stops
            when it reaches ``target_recall`` -- checked once the examples are recalled -- instead
            of at recall alone: memorising the trained phrasings is not yet answering others.
        guard: With ``evaluate``: called on the model before each evaluation; a string says
            why these weights may not be kept (e.g. base-model drift over the limit,
            :class:`.drift.DriftGuard`). Training stops there and returns the best evaluated
            weights before it (or these, if none was evaluated), with the reason in
            ``TrainResult.guarded``. Training only moves further from the base, so it does
            not go on past a refusal.

    Returns:
        The adapter, its training statistics and why training stopped.
    """
    config = config or TrainConfig()
    if not examples:
        raise InvalidInputError("examples must not be empty: give at least one Example")
    owned = not isinstance(base_model, Generator)
    gen = Generator(str(base_model), device=config.device) if owned else base_model
    assert isinstance(gen, Generator)
    if not owned and _has_lora_layers(gen.model):
        raise InvalidInputError(
            "this Generator's model carries LoRA layers (modules loaded for answering), so it "
            "cannot be trained in place: pass its path instead, train_lora(gen.path, ...)"
        )
    items = tokenize(gen, examples)
    with contextlib.nullcontext() if owned else gen.lock:
        model = _attach_lora(gen.model, config)
        try:
            result = _train(model, gen, items, config, progress, evaluate, guard)
        finally:
            if not owned:  # give the caller its bare model back
                model.unload()
                gen.model.eval()
    if not owned:
        result.model = None
    return result


def _attach_lora(base: Any, config: TrainConfig) -> Any:
    """Wrap ``base`` in a trainable LoRA (in place: its linear layers get adapters)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)  # LoRA A init
    target = config.target_modules
    layers = None
    n = int(base.config.num_hidden_layers)
    if config.top_layers is not None and config.top_layers < n:  # else: every layer
        layers = list(range(n - config.top_layers, n))
        if target == "all-linear":  # peft takes layers_to_transform with module names only
            target = _linear_names(base)
            if not target:
                raise InvalidInputError(
                    "top_layers needs target_modules named for this model (no linear layers "
                    "found under '.layers.')"
                )
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha if config.alpha is not None else config.rank,
        lora_dropout=config.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        return get_peft_model(base, lora_config)  # also freezes the base weights


def _linear_names(model: Any) -> tuple[str, ...]:
    """The names of the linear layers inside the transformer blocks (what 'all-linear' means)."""
    import torch

    return tuple(
        sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, mod in model.named_modules()
                if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}"
            }
        )
    )


def _train(  # noqa: PLR0917
    model: Any,
    gen: Generator,
    items: list[_Item],
    config: TrainConfig,
    progress: bool,
    evaluate: Callable[[Any, Generator], float] | None = None,
    guard: Callable[[Any], str | None] | None = None,
) -> TrainResult:
    import numpy as np
    import torch
    from peft import get_peft_model_state_dict
    from tqdm.auto import tqdm

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng, device = random.Random(config.seed), gen.device
    params = [p for p in model.parameters() if p.requires_grad]
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, fused=cuda, foreach=not cuda
    )

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    pad_id = int(gen.tokenizer.pad_token_id)
    frozen = None
    if config.top_layers is not None:  # the layers below never change: run them once
        with autocast():
            frozen = FrozenBottom.build(
                model, config.top_layers, [it.ids for it in items], pad_id, device
            )
    share_prefix = config.share_prefix

    def forward(
        idx: Sequence[int], batch: _Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if frozen is None:
            return supervised_logits(model, batch)
        targets = next_token_targets(batch)  # [B, T]
        keep = targets != IGNORE  # [B, T]
        logits = frozen.logits(idx, batch.mask, keep, batch.prefix)
        return logits, targets[keep], keep.nonzero()[:, 0]

    def step_parts(idx: Sequence[int]) -> list[tuple[list[int], _Batch]]:
        return [
            (part, collate([items[i] for i in part], pad_id, share_prefix, device))
            for part in split_step(items, idx)
        ]

    qa_index = [i for i, it in enumerate(items) if it.qa]
    eval_batches = [
        part
        for idx in (
            [qa_index[j] for j in b]
            for b in make_batches([items[i] for i in qa_index], config.batch_size, None)
        )
        for part in step_parts(idx)
    ]

    def exact_recall() -> float:
        model.eval()
        hit = 0
        with torch.inference_mode() if frozen is None else torch.no_grad(), autocast():
            for idx, b in eval_batches:
                hit += count_recalled(*forward(idx, b), b.qa)
        model.train()
        return hit / len(qa_index)

    steps = epochs = tokens = pads = 0
    loss_value, fit = float("nan"), 0.0
    history: list[tuple[int, float, float]] = []
    evaluations: list[tuple[int, float, float]] = []
    # best score, the evaluation that first reached it (patience counts from there), the LoRA
    # weights kept: of the latest evaluation with that score, numbered ``kept``
    best: tuple[float, int, dict[str, Any]] | None = None
    kept = 0
    guarded: str | None = None
    stop: StopReason | None = None
    bar = tqdm(total=config.max_steps, unit="step", file=sys.stderr, disable=not progress)
    model.train()
    t0 = time.perf_counter()
    while stop is None:
        epochs += 1
        hit = seen = 0
        for idx in make_batches(items, config.batch_size, rng):
            for group in opt.param_groups:  # linear warmup, then constant
                group["lr"] = config.lr * min(1.0, (steps + 1) / (config.warmup_steps + 1))
            parts = step_parts(idx)
            supervised = sum(int((next_token_targets(b) != IGNORE).sum()) for _, b in parts)
            loss_value = 0.0
            for part, batch in parts:  # the step's mean loss, accumulated over its sub-batches
                with autocast():
                    logits, targets, rows = forward(part, batch)  # [N, V], [N], [N]
                    loss = token_loss(logits, targets, batch) * (len(targets) / supervised)
                loss.backward()  # type: ignore[no-untyped-call]
                tokens, pads = tokens + batch.tokens, pads + batch.pads
                hit += count_recalled(logits.detach(), targets, rows, batch.qa)
                seen += int(batch.qa.sum())
                loss_value += loss.item()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps, elapsed = steps + 1, time.perf_counter() - t0
            fit = hit / seen if seen else 0.0
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss_value:.3f}", tok_s=f"{tokens / elapsed:.0f}", fit=f"{fit:.2f}"
            )
            if steps >= config.max_steps:
                stop = "max_steps"
            elif config.max_seconds is not None and elapsed >= config.max_seconds:
                stop = "max_seconds"
            if stop:
                break
        due = qa_index and epochs % config.eval_every_epochs == 0
        if stop is None and due and fit >= EVAL_GATE * config.target_recall:
            # With a held-out evaluator, the epoch's own batches say when to start evaluating:
            # an exact pass over every example each epoch cost 59 s of 394 on the Lisbon story.
            recall = exact_recall() if evaluate is None else fit
            history.append((steps, time.perf_counter() - t0, recall))
            bar.set_postfix(loss=f"{loss_value:.3f}", recall=f"{recall:.3f}")
            if evaluate is None:
                if recall >= config.target_recall:
                    stop = "target"
            elif recall < (config.evaluate_from or config.target_recall):
                pass  # not yet worth a held-out evaluation
            elif guard is not None and (guarded := guard(model)) is not None:
                logger.info("LoRA: step %d refused: %s", steps, guarded)
                stop = "guard"
            else:
                model.eval()
                score = evaluate(model, gen)
                model.train()
                evaluations.append((steps, time.perf_counter() - t0, score))
                logger.info("LoRA: step %d, held-out score %.3f", steps, score)
                bar.set_postfix(loss=f"{loss_value:.3f}", held_out=f"{score:.3f}")
                if best is None or score > best[0]:
                    best = (score, len(evaluations), _lora_state(model))
                    kept = len(evaluations)
                elif score == best[0]:  # a tie: the later weights, trained longer on the facts
                    best = (score, best[1], _lora_state(model))  # patience still counts from
                    kept = len(evaluations)  # the first evaluation that reached the score
                if score >= config.target_recall:
                    stop = "target"
                elif (wait := _patience(config, best[0])) and len(evaluations) - best[1] >= wait:
                    stop = "plateau"
        text_only = not qa_index
        if stop is None and text_only and config.max_epochs and epochs >= config.max_epochs:
            stop = "max_epochs"
    held_out = judged = None
    if best is not None and (kept < len(evaluations) or guarded):  # later weights were worse
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, best[2])
        logger.info("LoRA: kept the weights of evaluation %d (score %.3f)", kept, best[0])
        held_out, judged = best[0], kept
    elif best is not None and evaluations[-1][0] == steps:  # no step since the best one
        held_out, judged = best[0], kept
    if judged is not None:  # their epoch's check stands for them: no exact pass again
        at = evaluations[judged - 1][0]
        history.append(next(h for h in reversed(history) if h[0] == at))
    elif qa_index and (evaluate is not None or not history or history[-1][0] != steps):
        history.append((steps, time.perf_counter() - t0, exact_recall()))  # of the kept weights
    seconds = time.perf_counter() - t0
    bar.close()
    model.eval()
    state = {
        k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()
    }
    result = TrainResult(
        model=model,
        adapter_state=state,
        lora_config=model.peft_config["default"],
        base_model=_public_name(gen),
        steps=steps,
        epochs=epochs,
        seconds=seconds,
        train_tokens=tokens,
        tokens_per_second=tokens / seconds,
        recall=history[-1][2] if history else None,
        recall_history=history,
        eval_history=evaluations,
        held_out=held_out,
        kept_evaluation=judged,
        guarded=guarded,
        stopped_because=stop or "max_steps",
        padding_fraction=pads / (pads + tokens),
        loss=loss_value,
    )
    logger.info("LoRA: %d steps, %.1fs, recall %s (%s)", steps, seconds, result.recall, stop)
    return result


def _patience(config: TrainConfig, best: float) -> int | None:
    """Evaluations without gain that end training: ``patience``, or ``patience_below`` while
    the best score is under ``pass_score`` (stopping there would commit nothing)."""
    below = config.pass_score is not None and best < config.pass_score
    if below and config.patience_below is not None:
        return config.patience_below
    return config.patience


def _lora_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _has_lora_layers(model: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def _public_name(gen: Generator) -> str:
    """A Hugging Face id stays; a local dir becomes ``local:<dir name>`` (no machine paths)."""
    if gen.name == "default" or Path(gen.name).expanduser().exists():
        return f"local:{Path(gen.path).name}"
    return gen.name


def save_adapter(result: TrainResult, out_dir: str | Path) -> Path:
    """Write a plain PEFT adapter dir: adapter_config.json + adapter_model.safetensors.

    Load it with ``peft.PeftModel.from_pretrained(base_model, out_dir)``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(result.lora_config)
    cfg.base_model_name_or_path = result.base_model
    cfg.save_pretrained(str(out))
    state = {k: v.contiguous() for k, v in result.adapter_state.items()}
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out
