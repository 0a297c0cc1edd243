"""Consolidation benchmark: PhoneBook into LoRA, ours next to the paper's recipe (arXiv 2603.01097).

Full run (every part; about 2.5 hours on a 2-core CPU box, far less on a GPU):

    .venv/bin/python benchmarks/consolidation.py

Parts (``--parts``, comma-separated, run in the order given; default all four):

- ``ours``: the PhoneBook-1K facts (48 ``Question: ... Answer: ...`` rows) written as user turns
  to a fresh store through the public API (``LoRAMemory.open`` + ``add_turns``), then
  ``mem.consolidate(ns)`` with the store's defaults (mixture, writer, gate, lr, capacity
  planning: what a user gets) timed wall-clock, then exact match of
  ``mem.ask(ns, q, mode="lora")`` on every question (the reply contains the number). Time to
  >= 99% = that consolidate wall time when the final EM reaches it (the training model's load,
  the training data, training, the drift check and the probe gate all included).
- ``recipe``: the paper's baseline with HF ``transformers.Trainer`` + peft: LoRA r=4, alpha=4,
  all linear layers, dropout 0.1, lr 5e-5, batch 8, AdamW with Trainer's linear schedule over
  ``--recipe-steps`` (1500), the chat template (our system prompt, user = question, assistant =
  answer), loss on the assistant tokens only. Every ``--eval-every`` (100) steps: greedy
  generation EM on all questions with the same prompt ``ask`` renders; wall seconds exclude
  eval time. Stops at the first eval >= ``--target`` (0.99) or after ``--recipe-minutes`` (40)
  of training. Never extrapolated: a recipe that does not reach the target gives a lower bound
  on the time ratio.
- ``pb4k``: PhoneBook 4K (193 facts) through the public API like ``ours`` (capacity planning
  may split it into several modules; ``ask`` routes); target ``--pb4k-target`` (0.95).
- ``throughput``: our ``train_lora`` (its defaults: r=16, lr 1e-3, batch 16) next to a plain
  HF ``Trainer`` + peft with the same rank, lr, batch, token ids and labels, for
  ``--throughput-steps`` (30) steps each. Tokens/s = non-pad input tokens per second of training
  (a shared prefix run once still counts once per row); supervised tokens/s too.

Outputs: ``<out>/consolidation.json`` (config, environment, every raw number; rewritten after
each part, and parts from an earlier run are kept unless ``--fresh``), ``consolidation.md``
(tables) and ``consolidation.png`` (EM vs wall seconds). ``--report-only`` rebuilds md and png
from the JSON. Progress goes to stderr. Temporary stores go in the system temp folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _env import base_environment  # benchmarks/ is on sys.path when a script runs

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "phonebook"
FILES = {"1k": "phonebook_qa_1K.csv", "4k": "phonebook_qa_4K.csv"}
PARTS = ("ours", "recipe", "throughput", "pb4k")
PACKAGES = ("lora-memory-plugin", "torch", "transformers", "peft", "accelerate", "tokenizers")
IGNORE = -100
JSON_NAME, MD_NAME, PNG_NAME = "consolidation.json", "consolidation.md", "consolidation.png"


# ---- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    parts: tuple[str, ...]
    data: str
    out: str
    threads: int
    limit: int | None
    seed: int
    target: float
    new_tokens: int
    max_minutes: float | None
    gate: float | None
    recipe_steps: int
    recipe_minutes: float
    eval_every: int
    eval_batch: int
    pb4k_target: float
    throughput_steps: int
    throughput_repeats: int
    fresh: bool
    report_only: bool


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description="Consolidation benchmark: ours vs the paper recipe.")
    p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="PhoneBook folder (not copied)")
    p.add_argument("--out", default="docs/benchmarks", help="output folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N facts (smoke)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=0.99, help="EM target for ours and recipe")
    p.add_argument(
        "--new-tokens", type=int, default=32, help="greedy tokens per answer (ask and recipe eval)"
    )
    p.add_argument("--max-minutes", type=float, default=None, help="consolidate's wall budget")
    p.add_argument(
        "--gate", type=float, default=None, help="consolidate's commit gate (default: the store's)"
    )
    p.add_argument("--recipe-steps", type=int, default=1500)
    p.add_argument("--recipe-minutes", type=float, default=40.0, help="recipe training budget")
    p.add_argument("--eval-every", type=int, default=100, help="recipe steps between evals")
    p.add_argument(
        "--eval-batch", type=int, default=48, help="recipe eval prompts per generate call"
    )
    p.add_argument("--pb4k-target", type=float, default=0.95)
    p.add_argument("--throughput-steps", type=int, default=30)
    p.add_argument("--throughput-repeats", type=int, default=1, help="alternating runs per side")
    p.add_argument("--fresh", action="store_true", help="drop parts kept from an earlier JSON")
    p.add_argument("--report-only", action="store_true", help="rebuild md + png from the JSON")
    a = p.parse_args(argv)
    parts = tuple(s.strip() for s in a.parts.split(",") if s.strip())
    if not parts or any(s not in PARTS for s in parts):
        p.error(f"--parts must be a subset of {','.join(PARTS)}")
    for name in ("recipe_steps", "eval_every", "eval_batch", "throughput_steps", "new_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be >= 1")
    if a.throughput_repeats < 1:
        p.error("--throughput-repeats must be >= 1")
    return Config(
        parts=parts,
        data=a.data,
        out=a.out,
        threads=a.threads or _cores(),
        limit=a.limit,
        seed=a.seed,
        target=a.target,
        new_tokens=a.new_tokens,
        max_minutes=a.max_minutes,
        gate=a.gate,
        recipe_steps=a.recipe_steps,
        recipe_minutes=a.recipe_minutes,
        eval_every=a.eval_every,
        eval_batch=a.eval_batch,
        pb4k_target=a.pb4k_target,
        throughput_steps=a.throughput_steps,
        throughput_repeats=a.throughput_repeats,
        fresh=a.fresh,
        report_only=a.report_only,
    )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    text: str  # the CSV row as stored: "Question: ... Answer: NNN-NNN-NNNN"
    question: str
    answer: str


def load_facts(cfg: Config, which: str) -> list[Fact]:
    """PhoneBook rows parsed the way consolidation parses records (``data.parse_qa``)."""
    import csv

    from lora_memory_plugin.consolidation.data import parse_qa

    path = Path(cfg.data).expanduser() / FILES[which]
    if not path.is_file():
        sys.exit(f"PhoneBook data not found: {path} (pass --data DIR)")
    facts = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["text"].strip()
            qa = parse_qa(text)
            if qa is not None:
                facts.append(Fact(text, qa[0], qa[1]))
    return facts[: cfg.limit] if cfg.limit else facts


def hit(answer: str, reply: str) -> bool:
    """Exact match as the consolidation gate scores it: the reply contains the answer."""
    return answer.strip().lower() in reply.strip().lower()


def system_prompt() -> str:
    from lora_memory_plugin.config import StoreConfig

    return StoreConfig().generation.system_prompt


def prompt_messages(question: str) -> list[dict[str, str]]:
    """What ``ask(mode='lora')`` sends: our system prompt + the bare question."""
    return [{"role": "system", "content": system_prompt()}, {"role": "user", "content": question}]


def base_generator() -> Any:
    from lora_memory_plugin.generation.backend import get_generator

    return get_generator("default")


# ---- parts 1 + 3: ours through the public API ----------------------------------------------
def bench_public_api(cfg: Config, which: str, target: float) -> dict[str, Any]:
    """A fresh store, the facts as user turns, ``consolidate`` with the store's defaults (only
    the seed, and ``--gate`` / ``--max-minutes`` when given), then ``ask(mode="lora")``."""
    from lora_memory_plugin import LoRAMemory

    facts = load_facts(cfg, which)
    ns = f"phonebook-{which}"
    log(f"ours/{which}: {len(facts)} facts -> fresh store, consolidate, ask(mode='lora')")
    with tempfile.TemporaryDirectory(prefix="lm-bench-cons-") as tmp:
        mem = LoRAMemory.open(Path(tmp) / "store")
        gen = mem.generator()  # the serving model; loading it is not part of consolidation
        cc = mem.config.consolidation
        t0 = time.perf_counter()
        mem.add_turns(ns, [{"content": f.text, "role": "user"} for f in facts])
        add_s = time.perf_counter() - t0
        options: dict[str, Any] = {"seed": cfg.seed}
        if cfg.gate is not None:
            options["target"] = cfg.gate
        if cfg.max_minutes is not None:
            options["max_minutes"] = cfg.max_minutes
        log(f"ours/{which}: add_turns {add_s:.1f}s; consolidate(ns, {options})")
        t0 = time.perf_counter()
        report = mem.consolidate(ns, progress=True, **options)[0]
        wall = time.perf_counter() - t0
        manifests = mem.modules(ns)
        log(
            f"ours/{which}: {report.status} in {wall:.1f}s, {report.steps} steps, "
            f"{len(report.modules)} module(s), probe EM {report.probe_recall}"
        )
        for note in report.notes:
            log(f"ours/{which}: note: {note}")
        hits, replies, ask_s, modes = 0, [], 0.0, set()
        for i, f in enumerate(facts):
            t = time.perf_counter()
            ans = mem.ask(ns, f.question, mode="lora", max_new_tokens=cfg.new_tokens)
            ask_s += time.perf_counter() - t
            modes.add(ans.mode)
            ok = ans.mode == "lora" and hit(f.answer, ans.text)  # a rag fallback never counts
            hits += ok
            if not ok or i < 3:
                replies.append(
                    {
                        "question": f.question,
                        "answer": f.answer,
                        "reply": ans.text,
                        "mode": ans.mode,
                    }
                )
            if (i + 1) % 16 == 0 or i + 1 == len(facts):
                log(f"ours/{which}: asked {i + 1}/{len(facts)}, {hits} right")
        em = hits / len(facts)
        device = str(gen.device)
    train_s = sum(float(m.get("seconds", 0.0)) for m in report.modules)
    return {
        "dataset": FILES[which],
        "facts": len(facts),
        "target": target,
        "device": device,
        "consolidate_options": options,
        "store_defaults": {
            "mixture": cc.mixture,
            "writer": cc.writer,
            "gate": cc.target,
            "lr": cc.lr,
            "max_steps": cc.max_steps,
            "drift_max": cc.drift_max,
        },
        "add_turns_s": add_s,
        "consolidate_wall_s": wall,
        "status": report.status,
        "records_consolidated": report.records_consolidated,
        "modules_planned": len(report.modules),
        "modules_committed": len(report.modules_created),
        "steps": report.steps,
        "train_s": train_s,
        "train_tokens": report.train_tokens,
        "tokens_per_s": report.tokens_per_second,
        "tf_recall": report.recall,
        "probe_em": report.probe_recall,
        "drift": report.drift,
        "capacity": report.capacity,
        "modules": list(report.modules),
        "stopped_because": [m.metrics.get("stopped_because") for m in manifests],
        "report_notes": list(report.notes),
        "em": em,
        "hits": hits,
        "answer_modes": sorted(modes),
        "ask_s_total": ask_s,
        "time_to_target_s": wall if em >= target else None,
        "replies_sample": replies[:12],
    }


# ---- HF Trainer helpers (recipe + throughput) ---------------------------------------------
@dataclass(frozen=True)
class Row:
    ids: list[int]
    labels: list[int]


def chat_rows(gen: Any, facts: Sequence[Fact]) -> list[Row]:
    """The recipe's rows: the full chat (system, user, assistant); loss on what follows the
    prompt ``ask`` renders (the answer, ``<|im_end|>`` and the template's newline)."""
    tok, rows = gen.tokenizer, []
    for f in facts:
        messages = prompt_messages(f.question)
        prompt = gen.render(messages)
        full = str(
            tok.apply_chat_template(
                [*messages, {"role": "assistant", "content": f.answer}], tokenize=False
            )
        )
        if not full.startswith(prompt):
            raise RuntimeError("chat template: the conversation does not extend the prompt")
        p_ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
        ids = list(tok(full, add_special_tokens=False)["input_ids"])
        if ids[: len(p_ids)] != p_ids:
            raise RuntimeError("chat template: prompt tokens differ inside the conversation")
        rows.append(Row(ids, [IGNORE] * len(p_ids) + ids[len(p_ids) :]))
    return rows


class TokenCount:
    """Tokens the HF Trainer actually trained on, counted where the loss is computed."""

    def __init__(self) -> None:
        self.tokens = self.supervised = self.batches = 0

    def add(self, inputs: dict[str, Any]) -> None:
        self.tokens += int(inputs["attention_mask"].sum())
        self.supervised += int((inputs["labels"][:, 1:] != IGNORE).sum())
        self.batches += 1


def hf_trainer(
    gen: Any,
    rows: Sequence[Row],
    *,
    rank: int,
    alpha: int,
    dropout: float,
    lr: float,
    batch: int,
    steps: int,
    seed: int,
    out_dir: str,
    callbacks: Sequence[Any],
) -> tuple[Any, TokenCount]:
    """A plain ``transformers.Trainer`` on a fresh copy of the base model wrapped in peft LoRA
    (all linear layers): AdamW and the linear schedule as Trainer defaults, right padding."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from lora_memory_plugin._device import quiet_loading

    cuda = gen.device.type == "cuda"
    with quiet_loading():
        base = AutoModelForCausalLM.from_pretrained(
            gen.path, dtype=gen.dtype, local_files_only=True
        )
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        model = get_peft_model(base.to(gen.device), lora)
    pad_id = int(gen.tokenizer.pad_token_id)
    count = TokenCount()

    def collate(batch_rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in batch_rows)
        ids, mask, labels = [], [], []
        for r in batch_rows:
            pad = width - len(r["input_ids"])
            ids.append(r["input_ids"] + [pad_id] * pad)
            mask.append([1] * len(r["input_ids"]) + [0] * pad)
            labels.append(r["labels"] + [IGNORE] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels),
        }

    class CountingTrainer(Trainer):  # type: ignore[misc]
        def compute_loss(self, model: Any, inputs: dict[str, Any], *a: Any, **kw: Any) -> Any:
            count.add(inputs)
            return super().compute_loss(model, inputs, *a, **kw)

    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        max_steps=steps,
        seed=seed,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        bf16=cuda and gen.dtype == torch.bfloat16,
        use_cpu=gen.device.type == "cpu",
    )
    dataset = [{"input_ids": r.ids, "labels": r.labels} for r in rows]
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collate,
        callbacks=list(callbacks),
    )
    return trainer, count


def greedy_em(
    model: Any, gen: Any, facts: Sequence[Fact], new_tokens: int, batch: int
) -> tuple[float, list[str]]:
    """Greedy EM of ``model`` on ``facts`` with the prompt ``ask`` renders (left-padded batches
    of ``batch`` prompts; ``batch=1`` is exactly the unpadded serving path)."""
    import torch

    tok, pad_id = gen.tokenizer, int(gen.tokenizer.pad_token_id)
    prompts = [
        list(tok(gen.render(prompt_messages(f.question)), add_special_tokens=False)["input_ids"])
        for f in facts
    ]
    was_training = model.training
    model.eval()
    replies: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            out = model.generate(
                input_ids=ids.to(gen.device),
                attention_mask=mask.to(gen.device),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
            for row in out[:, width:]:
                replies.append(str(tok.decode(row, skip_special_tokens=True)).strip())
    if was_training:
        model.train()
    em = sum(hit(f.answer, r) for f, r in zip(facts, replies, strict=True)) / len(facts)
    return em, replies


# ---- part 2: the paper's recipe -------------------------------------------------------------
RECIPE = {
    "rank": 4,
    "alpha": 4,
    "dropout": 0.1,
    "target_modules": "all-linear",
    "lr": 5e-5,
    "batch": 8,
    "optimizer": "AdamW (Trainer default adamw_torch_fused, weight decay 0)",
    "schedule": "linear decay over max_steps, no warmup (Trainer default)",
    "max_grad_norm": 1.0,
    "format": "chat template: our system prompt, user = question, assistant = answer",
    "loss": "assistant tokens only (answer, <|im_end|>, newline)",
}


def bench_recipe(cfg: Config) -> dict[str, Any]:
    from transformers import TrainerCallback

    gen = base_generator()
    facts = load_facts(cfg, "1k")
    rows = chat_rows(gen, facts)
    budget_s = cfg.recipe_minutes * 60
    curve: list[dict[str, Any]] = []
    state: dict[str, Any] = {"stop": None, "t0": 0.0, "excluded": 0.0, "replies": []}

    def evaluate(model: Any, step: int, train_s: float) -> float:
        t = time.perf_counter()
        em, replies = greedy_em(model, gen, facts, cfg.new_tokens, cfg.eval_batch)
        eval_s = time.perf_counter() - t
        curve.append({"step": step, "train_s": train_s, "em": em, "eval_s": eval_s})
        state["replies"] = [
            {"question": f.question, "answer": f.answer, "reply": r}
            for f, r in list(zip(facts, replies, strict=True))[:6]
        ]
        log(f"recipe: step {step}, {train_s:.0f}s training, EM {em:.3f} (eval {eval_s:.0f}s)")
        return em

    class EvalEvery(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            evaluate(kw["model"], 0, 0.0)
            state["t0"] = time.perf_counter()

        def on_step_end(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            train_s = time.perf_counter() - state["t0"] - state["excluded"]
            step = st.global_step
            over = train_s >= budget_s
            if step % cfg.eval_every == 0 or over or step >= cfg.recipe_steps:
                t = time.perf_counter()
                em = evaluate(kw["model"], step, train_s)
                state["excluded"] += time.perf_counter() - t
                if em >= cfg.target:
                    state["stop"] = "target"
            if over and state["stop"] is None:
                state["stop"] = "budget"
            if state["stop"]:
                control.should_training_stop = True

    log(
        f"recipe: {len(facts)} facts, r=4 lr 5e-5 batch 8, up to {cfg.recipe_steps} steps or "
        f"{cfg.recipe_minutes:g} min, eval every {cfg.eval_every}"
    )
    with tempfile.TemporaryDirectory(prefix="lm-bench-recipe-") as tmp:
        trainer, count = hf_trainer(
            gen,
            rows,
            rank=RECIPE["rank"],
            alpha=RECIPE["alpha"],
            dropout=RECIPE["dropout"],
            lr=RECIPE["lr"],
            batch=RECIPE["batch"],
            steps=cfg.recipe_steps,
            seed=cfg.seed,
            out_dir=tmp,
            callbacks=[EvalEvery()],
        )
        t_all = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its summary dict
            trainer.train()
        total_s = time.perf_counter() - t_all
    reached = next((p for p in curve if p["em"] >= cfg.target), None)
    last = curve[-1]
    train_s = last["train_s"]
    return {
        "dataset": FILES["1k"],
        "facts": len(facts),
        "target": cfg.target,
        "device": str(gen.device),
        "recipe": RECIPE,
        "max_steps": cfg.recipe_steps,
        "budget_s": budget_s,
        "eval_every": cfg.eval_every,
        "eval_batch": cfg.eval_batch,
        "stopped_because": state["stop"] or "max_steps",
        "steps": last["step"],
        "train_s": train_s,
        "s_per_step": train_s / last["step"] if last["step"] else None,
        "eval_s_total": sum(p["eval_s"] for p in curve),
        "run_s_total": total_s,
        "train_tokens": count.tokens,
        "supervised_tokens": count.supervised,
        "tokens_per_s": count.tokens / train_s if train_s else None,
        "time_to_target_s": reached["train_s"] if reached else None,
        "step_at_target": reached["step"] if reached else None,
        "best_em": max(p["em"] for p in curve),
        "final_em": last["em"],
        "curve": curve,
        "replies_sample": state["replies"],
    }


# ---- part 4: trainer throughput -------------------------------------------------------------
def ours_batches(items: Sequence[Any], batch: int, steps: int, seed: int) -> tuple[int, int]:
    """Replay ``train_lora``'s batch order (its rng drives only ``make_batches``): the non-pad
    and supervised tokens of its first ``steps`` batches."""
    from lora_memory_plugin.consolidation.trainer import make_batches

    rng, tokens, supervised, done = random.Random(seed), 0, 0, 0
    while done < steps:
        for idx in make_batches(items, batch, rng):
            tokens += sum(len(items[i].ids) for i in idx)
            supervised += sum(sum(x != IGNORE for x in items[i].labels[1:]) for i in idx)
            done += 1
            if done == steps:
                break
    return tokens, supervised


def run_ours_throughput(gen: Any, facts: Sequence[Fact], cfg: Config) -> dict[str, Any]:
    from lora_memory_plugin.consolidation.trainer import Example, TrainConfig, tokenize, train_lora

    examples = [Example.qa(f.question, f.answer, system=system_prompt()) for f in facts]
    # Defaults, except no recall passes during the run (eval_every_epochs huge) and the step
    # count; the one final recall pass runs after the clock reading kept in recall_history.
    tc = TrainConfig(
        max_steps=cfg.throughput_steps, eval_every_epochs=10**9, seed=cfg.seed, target_recall=1.0
    )
    r = train_lora(gen.path, examples, tc)
    if len(r.recall_history) != 1 or r.steps != cfg.throughput_steps:
        raise RuntimeError(f"unexpected run: {r.steps} steps, history {r.recall_history}")
    seconds = r.recall_history[-1][1]  # read before the final recall pass
    tokens, supervised = ours_batches(
        tokenize(gen, examples), tc.batch_size, cfg.throughput_steps, cfg.seed
    )
    if tokens != r.train_tokens:
        raise RuntimeError(f"token replay {tokens} != train_lora's {r.train_tokens}")
    return {
        "steps": r.steps,
        "seconds": seconds,
        "seconds_with_final_recall": r.seconds,
        "tokens": tokens,
        "supervised_tokens": supervised,
        "tokens_per_s": tokens / seconds,
        "supervised_per_s": supervised / seconds,
        "reported_tokens_per_s": r.tokens_per_second,
        "padding_fraction": r.padding_fraction,
        "loss": r.loss,
    }


def run_hf_throughput(gen: Any, facts: Sequence[Fact], cfg: Config) -> dict[str, Any]:
    from transformers import TrainerCallback

    from lora_memory_plugin.consolidation.trainer import Example, TrainConfig, tokenize

    d = TrainConfig()
    examples = [Example.qa(f.question, f.answer, system=system_prompt()) for f in facts]
    rows = [Row(list(it.ids), list(it.labels)) for it in tokenize(gen, examples)]
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, *a: Any, **kw: Any) -> None:
            clock["t0"] = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            clock["t1"] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="lm-bench-hf-") as tmp:
        trainer, count = hf_trainer(
            gen,
            rows,
            rank=d.rank,
            alpha=d.alpha if d.alpha is not None else d.rank,
            dropout=d.dropout,
            lr=d.lr,
            batch=d.batch_size,
            steps=cfg.throughput_steps,
            seed=cfg.seed,
            out_dir=tmp,
            callbacks=[Clock()],
        )
        with contextlib.redirect_stdout(sys.stderr):
            out = trainer.train()
    seconds = clock["t1"] - clock["t0"]
    return {
        "steps": count.batches,
        "seconds": seconds,
        "tokens": count.tokens,
        "supervised_tokens": count.supervised,
        "tokens_per_s": count.tokens / seconds,
        "supervised_per_s": count.supervised / seconds,
        "loss": float(out.training_loss),
    }


def bench_throughput(cfg: Config) -> dict[str, Any]:
    from lora_memory_plugin.consolidation.trainer import TrainConfig

    gen = base_generator()
    facts = load_facts(cfg, "1k")
    d = TrainConfig()
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "hf": []}
    sides: dict[str, Callable[[Any, Sequence[Fact], Config], dict[str, Any]]] = {
        "ours": run_ours_throughput,
        "hf": run_hf_throughput,
    }
    for rep in range(cfg.throughput_repeats):
        order = ("ours", "hf") if rep % 2 == 0 else ("hf", "ours")
        for side in order:
            log(f"throughput: {side}, {cfg.throughput_steps} steps (run {rep + 1})")
            r = sides[side](gen, facts, cfg)
            runs[side].append(r)
            log(
                f"throughput: {side} {r['tokens_per_s']:.0f} tokens/s, "
                f"{r['supervised_per_s']:.1f} supervised/s, {r['seconds']:.1f}s"
            )

    def median(side: str, key: str) -> float:
        vals = sorted(r[key] for r in runs[side])
        mid = len(vals) // 2
        return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2

    ours_tps, hf_tps = median("ours", "tokens_per_s"), median("hf", "tokens_per_s")
    return {
        "facts": len(facts),
        "device": str(gen.device),
        "settings": {
            "rank": d.rank,
            "alpha": d.alpha if d.alpha is not None else d.rank,
            "lr": d.lr,
            "batch": d.batch_size,
            "steps": cfg.throughput_steps,
            "dropout": d.dropout,
        },
        "repeats": cfg.throughput_repeats,
        "ours_tokens_per_s": ours_tps,
        "hf_tokens_per_s": hf_tps,
        "ratio": ours_tps / hf_tps,
        "ours_supervised_per_s": median("ours", "supervised_per_s"),
        "hf_supervised_per_s": median("hf", "supervised_per_s"),
        "runs": runs,
    }


# ---- environment -----------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    import torch

    from lora_memory_plugin._device import resolve_device

    device = resolve_device("auto")
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    return {
        **base_environment(PACKAGES),
        "usable_cores": _cores(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "gpu": gpu,
        "loadavg": list(os.getloadavg()),
    }


def machine_line(env: dict[str, Any]) -> str:
    pk = env["packages"]
    dev = env["device"] + (f" ({env['gpu']})" if env.get("gpu") else "")
    return (
        f"{env['cpu_model']}, {env['cpu_count']} CPUs ({env['torch_threads']} torch threads), "
        f"device {dev}, {env['uname']}; Python {env['python']}, torch {pk['torch']}, "
        f"transformers {pk['transformers']}, peft {pk['peft']}"
    )


# ---- results file + report ---------------------------------------------------------------------
def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if data.get("benchmark") == "consolidation":
            return data
    return {"benchmark": "consolidation", "parts": {}}


def save_results(out: Path, res: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (JSON_NAME + ".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / JSON_NAME)
    md = markdown(res)
    (out / MD_NAME).write_text(md, encoding="utf-8")
    try:
        plot(res, out / PNG_NAME)
    except ImportError:
        log("matplotlib missing: no png (pip install -e '.[bench]')")


def _s(x: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def time_ratio(parts: dict[str, Any]) -> dict[str, Any] | None:
    """recipe time to target / ours, or a lower bound when the recipe never got there."""
    ours, rec = parts.get("ours"), parts.get("recipe")
    if not ours or not rec or ours.get("facts") != rec.get("facts"):
        return None
    o = ours.get("time_to_target_s")
    if o is None:
        return {"kind": "none", "why": "ours did not reach the target"}
    out: dict[str, Any] = {"ours_s": o, "ours_train_s": ours.get("train_s")}
    r = rec.get("time_to_target_s")
    if r is not None:
        out.update(kind="measured", recipe_s=r, ratio=r / o)
    else:
        bound = min(rec["train_s"], rec["budget_s"])
        out.update(kind="lower_bound", recipe_s=bound, ratio=bound / o)
    if ours.get("train_s"):
        out["ratio_vs_ours_training_only"] = out["recipe_s"] / ours["train_s"]
    return out


def markdown(res: dict[str, Any]) -> str:
    parts = res.get("parts", {})
    lines = ["# Consolidation benchmark", ""]
    if "environment" in res:
        lines += [f"Machine: {machine_line(res['environment'])}.", ""]
    head = ("Part", "Facts", "Steps", "Wall s", "Train tokens/s", "EM", "Target", "Met?")
    lines += ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, label in (("ours", "ours, PhoneBook 1K"), ("pb4k", "ours, PhoneBook 4K")):
        p = parts.get(key)
        if p:
            lines.append(
                f"| {label} (consolidate, {p.get('modules_committed', 1)} module(s)) | "
                f"{p['facts']} | {p['steps']} | "
                f"{p['consolidate_wall_s']:.0f} (training {_s(p.get('train_s'))}) | "
                f"{p['tokens_per_s']:.0f} | {p['em']:.3f} | {p['target']:.2f} | "
                f"{'yes' if p['em'] >= p['target'] else '**no**'} |"
            )
    rec = parts.get("recipe")
    if rec:
        lines.append(
            f"| paper recipe, PhoneBook 1K (HF Trainer) | {rec['facts']} | {rec['steps']} | "
            f"{rec['train_s']:.0f} (stopped: {rec['stopped_because']}) | "
            f"{_s(rec.get('tokens_per_s'))} | {rec['final_em']:.3f} (best {rec['best_em']:.3f}) "
            f"| {rec['target']:.2f} | {'yes' if rec['time_to_target_s'] is not None else 'no'} |"
        )
    lines.append("")
    ratio = time_ratio(parts)
    if rec:
        if rec["time_to_target_s"] is not None:
            t = f"{rec['time_to_target_s']:.0f} s (step {rec['step_at_target']})"
        else:
            t = (
                f"not reached within {rec['budget_s'] / 60:g} min / {rec['max_steps']} steps "
                f"(stopped after {rec['steps']} steps, {rec['train_s']:.0f} s of training)"
            )
        lines.append(
            f"- Paper recipe, time to EM >= {rec['target']:.2f} (the first eval at or above it; "
            f"evals every {rec['eval_every']} steps): {t}."
        )
    if parts.get("ours"):
        o = parts["ours"]
        lines.append(
            f"- Ours, time to EM >= {o['target']:.2f}: "
            + (
                f"{o['time_to_target_s']:.0f} s (the whole consolidate call)."
                if o["time_to_target_s"] is not None
                else f"not reached (final EM {o['em']:.3f}, status {o['status']})."
            )
        )
    if ratio and ratio["kind"] != "none":
        word = "" if ratio["kind"] == "measured" else "at least "
        note = " (lower bound: the recipe never reached the target)" * (
            ratio["kind"] == "lower_bound"
        )
        extra = ""
        if "ratio_vs_ours_training_only" in ratio:
            extra = (
                f"; {word}{ratio['ratio_vs_ours_training_only']:.1f}x against our training "
                "time alone"
            )
        lines.append(
            f"- **Speed-up to the target: {word}{ratio['ratio']:.1f}x**{note}, recipe training "
            f"seconds / our consolidate wall seconds{extra}. Measured, never extrapolated."
        )
    elif ratio:
        lines.append(f"- No time ratio: {ratio['why']}.")
    tp = parts.get("throughput")
    if tp:
        s = tp["settings"]
        lines += [
            "",
            f"## Trainer throughput ({tp['facts']} QA examples, r={s['rank']}, lr {s['lr']:g}, "
            f"batch {s['batch']}, {s['steps']} steps, median of {tp['repeats']})",
            "",
            "| Trainer | tokens/s | supervised tokens/s |",
            "|---|---:|---:|",
            f"| ours (`train_lora`) | {tp['ours_tokens_per_s']:.0f} | "
            f"{tp['ours_supervised_per_s']:.1f} |",
            f"| HF Trainer + peft | {tp['hf_tokens_per_s']:.0f} | "
            f"{tp['hf_supervised_per_s']:.1f} |",
            f"| ratio ours / HF | {tp['ratio']:.2f}x | "
            f"{tp['ours_supervised_per_s'] / tp['hf_supervised_per_s']:.2f}x |",
            "",
            "Same token ids and labels (our rendering: prompt + answer + `<|im_end|>`, loss on the "
            "answer) on both sides; tokens = non-pad input tokens of the batches trained on (a "
            "prefix we run once still counts once per row), over training wall time only.",
        ]
    if rec:
        lines += [
            "",
            f"## Paper recipe EM curve (greedy, eval every {rec['eval_every']} steps, "
            "wall seconds exclude eval)",
            "",
            "| Step | Train s | EM |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {p['step']} | {p['train_s']:.0f} | {p['em']:.3f} |" for p in rec["curve"]]
    lines += [
        "",
        "Notes:",
        "- EM: the greedy reply contains the phone number. Ours answers through "
        "`mem.ask(ns, q, mode='lora')`; the recipe is scored with the same prompt (our system "
        "prompt + the question, chat template), in left-padded batches.",
        "- Ours' wall time covers the whole `consolidate` call with the store's defaults: "
        "loading a training copy of the model, building the training data, training each "
        "module until teacher-forced recall 1.0, the drift check, saving, and the probe gate "
        "(greedy answers to every question). 'training' is the trainer's own time. The "
        "recipe's wall time covers its training steps only (no model load, no evals).",
        "- A module that misses consolidate's gate is not committed; `ask` then falls back to "
        "rag, and such answers count as misses here.",
        f"- Every raw number: `{JSON_NAME}`; the curves: `{PNG_NAME}`.",
    ]
    here = machine_line(res["environment"]) if "environment" in res else None
    for key, p in parts.items():
        if p.get("machine") and p["machine"] != here:
            lines.append(f"- Part `{key}` ran on another machine or setup: {p['machine']}.")
        if p.get("run", {}).get("limit"):
            lines.append(f"- Part `{key}` used only the first {p['run']['limit']} facts (--limit).")
    runs = res.get("runs", [])
    if runs:
        lines += ["", "Runs:"]
        lines += [
            f"- `{r['command']}` ({', '.join(r['parts'])}; {r['date']}; load avg "
            f"{r['loadavg_start']:.1f} -> {r['loadavg_end']:.1f})"
            for r in runs
            if "loadavg_end" in r
        ]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = res.get("parts", {})
    fig, ax = plt.subplots(figsize=(8, 4.8))
    rec = parts.get("recipe")
    if rec:
        xs = [p["train_s"] for p in rec["curve"]]
        ax.plot(xs, [p["em"] for p in rec["curve"]], "o-", label="paper recipe (HF Trainer)")
        if rec["stopped_because"] == "budget":
            ax.axvline(rec["budget_s"], color="grey", ls=":", lw=1, label="recipe budget")
    for key, label, marker, color in (
        ("ours", "ours, PhoneBook 1K", "*", "C1"),
        ("pb4k", "ours, PhoneBook 4K", "D", "C2"),
    ):
        p = parts.get(key)
        if p:  # one measured point: EM after the consolidate call (no curve is measured)
            ax.plot(
                [p["consolidate_wall_s"]],
                [p["em"]],
                marker,
                ms=12,
                color=color,
                ls="none",
                label=f"{label}: after consolidate",
            )
    target = (rec or parts.get("ours") or {}).get("target")
    if target is not None:
        ax.axhline(target, color="red", ls=":", lw=1, label=f"target {target:.2f}")
    ax.set_xlabel("wall seconds (recipe: training only; ours: whole consolidate call)")
    ax.set_ylabel("greedy exact match")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(left=0)
    env = res.get("environment")
    title = "PhoneBook: EM vs wall time"
    if env:
        title += f"\n{env['cpu_model']}, {env['torch_threads']} threads, {env['device']}"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- main --------------------------------------------------------------------------------------
@contextlib.contextmanager
def run_record(res: dict[str, Any], cfg: Config, command: str) -> Iterator[dict[str, Any]]:
    rec: dict[str, Any] = {
        "command": command,
        "parts": list(cfg.parts),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg()[0],
    }
    res.setdefault("runs", []).append(rec)
    yield rec
    rec["loadavg_end"] = os.getloadavg()[0]


def main(argv: Sequence[str] | None = None) -> None:
    cfg = parse_args(argv)
    out = Path(cfg.out)
    if cfg.report_only:
        res = load_results(out / JSON_NAME)
        if not res["parts"]:
            sys.exit(f"no results in {out / JSON_NAME}")
        save_results(out, res)
        print(markdown(res))
        return
    # Before torch loads: the library sets all cores once unless OMP_NUM_THREADS is set.
    os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(cfg.threads)
    res = (
        {"benchmark": "consolidation", "parts": {}} if cfg.fresh else load_results(out / JSON_NAME)
    )
    args = " ".join(sys.argv[1:] if argv is None else argv)
    command = f".venv/bin/python benchmarks/consolidation.py {args}".strip()
    res["environment"] = environment()
    res["config"] = asdict(cfg)
    log(f"machine: {machine_line(res['environment'])}")
    benches: dict[str, Callable[[], dict[str, Any]]] = {
        "ours": lambda: bench_public_api(cfg, "1k", cfg.target),
        "recipe": lambda: bench_recipe(cfg),
        "throughput": lambda: bench_throughput(cfg),
        "pb4k": lambda: bench_public_api(cfg, "4k", cfg.pb4k_target),
    }
    with run_record(res, cfg, command) as run:
        for part in cfg.parts:
            t0 = time.perf_counter()
            result = benches[part]()
            result["part_s"] = time.perf_counter() - t0
            result["run"] = {"command": command, "date": run["date"], "limit": cfg.limit}
            result["machine"] = machine_line(res["environment"])
            res["parts"][part] = result
            run["loadavg_end"] = os.getloadavg()[0]
            save_results(out, res)
            log(f"{part}: done in {result['part_s']:.0f}s; wrote {out / JSON_NAME}")
    save_results(out, res)
    print(markdown(res))
    log(f"wrote {out / JSON_NAME}, {out / MD_NAME}, {out / PNG_NAME}")


if __name__ == "__main__":
    main()
