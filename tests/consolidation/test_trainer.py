"""The LoRA knowledge trainer on the tiny model: labels, bucketing, exact prefix sharing,
convergence that greedy generation confirms, budgets, adapter files, config validation."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lora_memory_plugin.consolidation.trainer import (
    IGNORE,
    Example,
    TrainConfig,
    TrainResult,
    _Item,
    collate,
    end_of_turn,
    make_batches,
    next_token_targets,
    save_adapter,
    split_step,
    supervised_logits,
    teacher_distributions,
    token_loss,
    tokenize,
    train_lora,
)
from lora_memory_plugin.errors import InvalidInputError
from lora_memory_plugin.generation.backend import Generator

SYSTEM = "You are helpful."
CODES = ["4471", "603", "5567", "7631", "1234", "990", "3141", "2718"]
EXAMPLES = [
    Example.qa(f"What is the code of box {i}?", c, system=SYSTEM) for i, c in enumerate(CODES)
]
# converges in ~70-130 steps on the sharpened tiny model (seed 0)
FAST = {"rank": 16, "lr": 1e-2, "batch_size": 8, "max_steps": 400}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model's matmuls are too small for two threads: one is faster and steadier."""
    import torch

    from lora_memory_plugin._device import configure_cpu_threads

    configure_cpu_threads()  # so a Generator does not raise the count again
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gen(sharp_model_dir: Path) -> Generator:
    return Generator(str(sharp_model_dir))


@pytest.fixture(scope="module")
def trained(sharp_model_dir: Path) -> TrainResult:
    return train_lora(sharp_model_dir, EXAMPLES, TrainConfig(**FAST), progress=False)  # type: ignore[arg-type]


def test_end_of_turn_is_chatml_im_end(gen: Generator) -> None:
    assert end_of_turn(gen) == "<|im_end|>"


def test_labels_mask_prompt_and_pads(gen: Generator) -> None:
    exs = [Example.qa("box 1?", "4471", system=SYSTEM), Example.qa("What is in box 22?", "7")]
    items = tokenize(gen, exs)
    for ex, item in zip(exs, items, strict=True):
        prompt = gen.tokenizer(gen.render(ex.messages()), add_special_tokens=False)["input_ids"]
        answer = gen.tokenizer(ex.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert item.ids == prompt + answer
        assert item.labels == [IGNORE] * len(prompt) + answer
        assert item.labels[-1] == gen.tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = gen.tokenizer.pad_token_id
    batch = collate(items, pad_id, share_prefix=False, device="cpu")
    width = max(len(it.ids) for it in items)
    assert tuple(batch.ids.shape) == (2, width)
    for row, item in enumerate(items):
        n = len(item.ids)
        assert batch.ids[row, :n].tolist() == item.ids
        assert batch.labels[row, :n].tolist() == item.labels
        assert batch.ids[row, n:].eq(pad_id).all() and batch.labels[row, n:].eq(IGNORE).all()
        assert batch.mask[row, :n].eq(1).all() and batch.mask[row, n:].eq(0).all()
    assert batch.tokens == sum(len(it.ids) for it in items)
    assert batch.pads == 2 * width - batch.tokens


def test_text_examples_supervise_every_token(gen: Generator) -> None:
    (item,) = tokenize(gen, [Example.text("My locker code is 4471.")])
    assert item.labels == item.ids and not item.qa
    assert "<|im_start|>" not in gen.tokenizer.decode(item.ids)


def test_bucketing_groups_similar_lengths_and_shuffles_batches() -> None:
    lengths = [random.Random(1).randint(2, 60) for _ in range(40)]
    items = [_Item(list(range(n)), list(range(n)), qa=True) for n in lengths]
    rng = random.Random(0)
    epochs = [make_batches(items, 8, rng) for _ in range(3)]
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(40))
        spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
        for (_, hi), (lo, _) in itertools.pairwise(spans):  # buckets do not interleave
            assert hi <= lo
    assert len({tuple(map(tuple, b)) for b in epochs}) > 1  # batch order reshuffled


def test_shared_prefix_matches_full_forward(gen: Generator) -> None:
    import torch
    import torch.nn.functional as F

    items = tokenize(gen, EXAMPLES[:4])
    pad_id = gen.tokenizer.pad_token_id
    shared = collate(items, pad_id, share_prefix=True, device="cpu")
    plain = collate(items, pad_id, share_prefix=False, device="cpu")
    assert shared.prefix > len(gen.tokenizer(SYSTEM)["input_ids"]) and plain.prefix == 0
    grads = []
    for batch in (shared, plain):
        gen.model.zero_grad()
        logits, targets, rows = supervised_logits(gen.model, batch)
        F.cross_entropy(logits, targets).backward()
        grads.append([p.grad.clone() for p in gen.model.parameters()])
        assert rows.tolist() == sorted(rows.tolist())
    gen.model.zero_grad(set_to_none=True)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_step_splits_into_sub_batches_with_the_same_mean_loss(gen: Generator) -> None:
    """Text rows and much longer rows run apart (no shared prefix lost, no padding to the long
    width); the step's loss, accumulated over the parts, is the single batch's mean loss."""
    import torch

    long = Example.qa("What is the code of box 9? " * 6, "8080", system=SYSTEM)
    examples = [*EXAMPLES[:3], Example.text("Box 9 holds code 8080."), long]
    items = tokenize(gen, examples)
    parts = split_step(items, range(len(items)))
    assert [sorted(part) for part in parts] == [[0, 1, 2], [4], [3]]
    pad_id = int(gen.tokenizer.pad_token_id)
    batches = [collate([items[i] for i in part], pad_id, True, "cpu") for part in parts]
    assert batches[0].prefix > 0  # the text row no longer stops the prompt rows from sharing
    whole = collate(items, pad_id, True, "cpu")
    assert whole.prefix == 0
    with torch.no_grad():
        one = token_loss(*supervised_logits(gen.model, whole)[:2], whole)
        total = sum(int((next_token_targets(b) != IGNORE).sum()) for b in batches)
        split = 0.0
        for b in batches:
            logits, targets, _ = supervised_logits(gen.model, b)
            split += float(token_loss(logits, targets, b)) * len(targets) / total
    assert split == pytest.approx(float(one), rel=1e-5)
    assert sum(b.pads for b in batches) < whole.pads


def test_shared_prefix_stops_before_the_first_supervised_logit(gen: Generator) -> None:
    import torch
    import torch.nn.functional as F

    same = [Example.qa("Same?", "12", system=SYSTEM), Example.qa("Same?", "1", system=SYSTEM)]
    items = tokenize(gen, same)
    n_prompt = next(j for j, label in enumerate(items[0].labels) if label != IGNORE)
    pad_id = gen.tokenizer.pad_token_id
    shared = collate(items, pad_id, share_prefix=True, device="cpu")
    assert shared.prefix == n_prompt - 1  # the last prompt position predicts the answer
    plain = collate(items, pad_id, share_prefix=False, device="cpu")
    with torch.inference_mode():
        losses = [F.cross_entropy(*supervised_logits(gen.model, b)[:2]) for b in (shared, plain)]
        n_targets = [supervised_logits(gen.model, b)[1].numel() for b in (shared, plain)]
    assert (
        n_targets[0] == n_targets[1] == sum(label != IGNORE for it in items for label in it.labels)
    )
    torch.testing.assert_close(losses[0], losses[1])
    (text,) = tokenize(gen, [Example.text("My locker code is 4471.")])
    assert collate([text, text], pad_id, share_prefix=True, device="cpu").prefix == 0


def test_trains_to_full_recall_and_greedy_generation_agrees(
    trained: TrainResult, sharp_model_dir: Path
) -> None:
    assert trained.stopped_because == "target", trained.recall_history
    assert trained.recall == 1.0 and trained.steps < FAST["max_steps"]
    assert trained.recall_history[-1][0] == trained.steps
    assert trained.train_tokens > 0 and trained.tokens_per_second > 0
    assert 0.0 <= trained.padding_fraction < 0.2
    reader = Generator(str(sharp_model_dir))
    reader.model = trained.model
    answers = [reader.chat(ex.messages(), max_new_tokens=8).text for ex in EXAMPLES]
    assert answers == CODES


def test_budgets_stop_training_and_say_why(sharp_model_dir: Path) -> None:
    steps = train_lora(
        sharp_model_dir, EXAMPLES, TrainConfig(**{**FAST, "max_steps": 3}), progress=False
    )
    assert steps.stopped_because == "max_steps" and steps.steps == 3
    assert steps.recall is not None and steps.recall < 1.0
    assert steps.recall_history[-1][0] == 3
    cfg = TrainConfig(**{**FAST, "max_seconds": 1e-3, "batch_size": 2})
    secs = train_lora(sharp_model_dir, EXAMPLES, cfg, progress=False)
    assert secs.stopped_because == "max_seconds" and secs.steps == 1 and secs.epochs == 1


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_save_adapter_reloads_with_identical_outputs(
    trained: TrainResult, sharp_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = save_adapter(trained, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    for path in out.glob("*.json"):
        text = path.read_text()
        assert str(sharp_model_dir) not in text and str(tmp_path) not in text
        assert '"/' not in text  # no absolute path anywhere
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "local:tiny-sharp"
    assert cfg["r"] == FAST["rank"] and cfg["lora_alpha"] == FAST["rank"]
    base = AutoModelForCausalLM.from_pretrained(sharp_model_dir)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    ids = torch.tensor([[1, 5, 9, 42, 7, 3, 2]])
    with torch.inference_mode():
        torch.testing.assert_close(
            reloaded(input_ids=ids).logits, trained.model(input_ids=ids).logits
        )


def test_generator_is_trained_in_place_and_restored(sharp_model_dir: Path, tmp_path: Path) -> None:
    import torch

    gen = Generator(str(sharp_model_dir))  # its own: this test loads a module into it
    before = {k: v.clone() for k, v in gen.model.state_dict().items()}
    result = train_lora(gen, EXAMPLES[:2], TrainConfig(**{**FAST, "max_steps": 2}), progress=False)
    assert result.model is None and result.adapter_state
    after = gen.model.state_dict()
    assert before.keys() == after.keys()  # no LoRA layers left behind
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not gen.model.training
    out = save_adapter(result, tmp_path)
    gen.chat(EXAMPLES[0].messages(), max_new_tokens=2, adapter=("m1", out))  # loads LoRA layers
    try:
        with pytest.raises(InvalidInputError, match=re.escape("train_lora(gen.path")):
            train_lora(gen, EXAMPLES[:2], TrainConfig(max_steps=1), progress=False)
    finally:
        gen.forget_adapter("m1")


def test_text_only_training_has_no_recall(sharp_model_dir: Path) -> None:
    cfg = TrainConfig(**{**FAST, "max_steps": 2})
    result = train_lora(
        sharp_model_dir, [Example.text("The quick brown fox.")], cfg, progress=False
    )
    assert result.recall is None and result.recall_history == []
    assert result.stopped_because == "max_steps"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "rank must be > 0, got 0"),
        ({"alpha": -1}, "alpha must be > 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be > 0"),
        ({"max_steps": -5}, "max_steps must be > 0, got -5"),
        ({"max_seconds": 0}, "max_seconds must be > 0 or None"),
        ({"target_recall": 1.5}, "target_recall must be in (0, 1]"),
        ({"eval_every_epochs": 0}, "eval_every_epochs must be > 0"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"max_grad_norm": 0}, "max_grad_norm must be > 0 or None"),
        ({"target_modules": ()}, "target_modules must be 'all-linear' or module names"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_example_validation(sharp_model_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="kind must be"):
        Example(answer="x", prompt=(("user", "q"),), kind="poem")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="answer must be a non-empty string"):
        Example.qa("q", "  ")
    with pytest.raises(InvalidInputError, match="needs prompt messages"):
        Example(answer="x")
    with pytest.raises(InvalidInputError, match="takes no prompt"):
        Example(answer="x", prompt=(("user", "q"),), kind="text")
    as_dicts = Example(answer="a", prompt=({"role": "user", "content": "q"},))  # type: ignore[arg-type]
    assert as_dicts == Example.qa("q", "a") and as_dicts.messages() == [
        {"role": "user", "content": "q"}
    ]
    with pytest.raises(InvalidInputError, match="examples must not be empty"):
        train_lora(sharp_model_dir, [], progress=False)


def test_evaluate_stops_on_a_held_out_score_and_keeps_the_best_weights(
    sharp_model_dir: Path,
) -> None:
    import torch
    from peft import get_peft_model_state_dict

    scores = iter([0.4, 0.6, 0.5, 0.3, 0.2, 0.1])
    snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate(model: object, gen: Generator) -> float:
        snapshots.append({k: v.clone() for k, v in get_peft_model_state_dict(model).items()})
        return next(scores)

    config = TrainConfig(**FAST | {"patience": 2})
    result = train_lora(str(sharp_model_dir), EXAMPLES, config, progress=False, evaluate=evaluate)
    assert result.stopped_because == "plateau"
    assert [s for _, _, s in result.eval_history] == [0.4, 0.6, 0.5, 0.3]
    best = snapshots[1]  # the 0.6 evaluation: its weights are the result's
    assert all(torch.equal(result.adapter_state[k], best[k]) for k in best)
    assert result.held_out == 0.6  # the gate need not generate it again

    # a tie keeps the later weights (trained longer), but does not reset patience
    scores = iter([0.4, 0.6, 0.6, 0.5, 0.3, 0.2])
    snapshots.clear()
    tied = train_lora(str(sharp_model_dir), EXAMPLES, config, progress=False, evaluate=evaluate)
    assert [s for _, _, s in tied.eval_history] == [0.4, 0.6, 0.6, 0.5]
    later = snapshots[2]
    assert all(torch.equal(tied.adapter_state[k], later[k]) for k in later)
    assert not all(torch.equal(later[k], snapshots[1][k]) for k in later)

    reached = train_lora(
        str(sharp_model_dir),
        EXAMPLES,
        TrainConfig(**FAST),
        progress=False,
        evaluate=lambda model, gen: 1.0,
    )
    assert reached.stopped_because == "target" and len(reached.eval_history) == 1
    assert reached.held_out == 1.0

    # a budget stops training a step after the last evaluation: those weights were never judged
    def flat(model: object, gen: Generator) -> float:
        return 0.5

    config = TrainConfig(**FAST | {"patience": 1})
    first = train_lora(str(sharp_model_dir), EXAMPLES, config, progress=False, evaluate=flat)
    assert first.held_out == 0.5  # kept the first evaluation's weights
    at = first.eval_history[0][0]  # one step an epoch: the run below evaluates there, then steps
    config = TrainConfig(**FAST | {"max_steps": at + 1})
    late = train_lora(str(sharp_model_dir), EXAMPLES, config, progress=False, evaluate=flat)
    assert [s for s, _, _ in late.eval_history] == [at]
    assert late.stopped_because == "max_steps" and late.held_out is None


def test_patience_is_longer_while_the_module_would_not_pass(sharp_model_dir: Path) -> None:
    """Below ``pass_score`` a tie or a dip does not end training (it would commit nothing):
    ``patience_below`` applies there, ``patience`` once the best score passes."""
    seen: list[float] = []

    def scripted(values: list[float]) -> Callable[[object, Generator], float]:
        it = iter(values)

        def evaluate(model: object, gen: Generator) -> float:
            seen.append(next(it))
            return seen[-1]

        return evaluate

    config = TrainConfig(**FAST | {"patience": 1, "patience_below": 3, "pass_score": 0.6})
    low = [0.2, 0.2, 0.1, 0.2, 0.7, 0.7, 0.5, 0.4]
    result = train_lora(str(sharp_model_dir), EXAMPLES, config, progress=False,
                        evaluate=scripted(low))  # fmt: skip
    # below 0.6: the 2nd, 3rd and 4th bring no gain over the 1st -> stop there, at 0.2
    assert [s for _, _, s in result.eval_history] == [0.2, 0.2, 0.1, 0.2]
    assert result.stopped_because == "plateau" and result.held_out == 0.2
    rising = [0.2, 0.2, 0.7, 0.7, 0.5]
    result = train_lora(str(sharp_model_dir), EXAMPLES, config, progress=False,
                        evaluate=scripted(rising))  # fmt: skip
    assert [s for _, _, s in result.eval_history] == [0.2, 0.2, 0.7, 0.7]  # patience 1 above
    assert result.held_out == 0.7
    plain = TrainConfig(**FAST | {"patience": 1})  # no pass_score: patience 1 throughout
    result = train_lora(str(sharp_model_dir), EXAMPLES, plain, progress=False,
                        evaluate=scripted(rising))  # fmt: skip
    assert [s for _, _, s in result.eval_history] == [0.2, 0.2]


def test_a_guard_stops_training_and_keeps_the_best_weights_it_allowed(
    sharp_model_dir: Path,
) -> None:
    """A guard (e.g. base-model drift over the limit) refuses the weights at an evaluation:
    training stops there and returns the best weights evaluated before it, not the refused ones."""
    import torch
    from peft import get_peft_model_state_dict

    scores = iter([0.3, 0.5, 0.4, 0.6])
    snapshots: list[dict[str, torch.Tensor]] = []
    refusals = iter([None, None, None, "drift +40.0% > 25%"])
    guarded: list[dict[str, torch.Tensor]] = []

    def evaluate(model: object, gen: Generator) -> float:
        snapshots.append({k: v.clone() for k, v in get_peft_model_state_dict(model).items()})
        return next(scores)

    def guard(model: object) -> str | None:
        guarded.append({k: v.clone() for k, v in get_peft_model_state_dict(model).items()})
        return next(refusals)

    config = TrainConfig(**FAST | {"patience": 3})
    result = train_lora(
        str(sharp_model_dir), EXAMPLES, config, progress=False, evaluate=evaluate, guard=guard
    )
    assert result.stopped_because == "guard" and result.guarded == "drift +40.0% > 25%"
    assert [s for _, _, s in result.eval_history] == [0.3, 0.5, 0.4]  # the 4th never ran
    assert result.held_out == 0.5 and result.kept_evaluation == 2
    # the recall reported is the check that evaluation 2 followed, not a further pass
    assert result.recall_history[-1] == next(
        h for h in result.recall_history if h[0] == result.eval_history[1][0]
    )
    best = snapshots[1]
    assert all(torch.equal(result.adapter_state[k], best[k]) for k in best)
    refused = guarded[-1]
    assert not all(torch.equal(result.adapter_state[k], refused[k]) for k in refused)

    # refused before any evaluation: the weights are returned as they are, unjudged
    first = train_lora(
        str(sharp_model_dir),
        EXAMPLES,
        config,
        progress=False,
        evaluate=evaluate,
        guard=lambda model: "drift +90.0% > 25%",
    )
    assert first.stopped_because == "guard" and first.eval_history == []
    assert first.held_out is None and first.guarded == "drift +90.0% > 25%"
    assert first.kept_evaluation is None


# --- logit-level distillation --------------------------------------------------------------


def test_teacher_distributions_align_with_answer_tokens(gen: Generator) -> None:
    (item,) = tokenize(gen, EXAMPLES[:1])
    (soft,) = teacher_distributions(gen, EXAMPLES[:1], k=5)
    answer = [t for t in item.labels if t != IGNORE]
    assert len(soft) == len(answer)  # one distribution per answer token, end-of-turn included
    for ids, probs in soft:
        assert len(ids) == len(probs) == 5 and len(set(ids)) == 5
        assert list(probs) == sorted(probs, reverse=True) and 0.0 < sum(probs) <= 1.0 + 1e-5
    # the same as a plain forward over the whole row, at each answer position
    import torch

    with torch.inference_mode():
        logits = gen.model(input_ids=torch.tensor([item.ids])).logits[0].float()
    start = len(item.ids) - len(answer) - 1
    for j, (ids, probs) in enumerate(soft):
        ref = torch.softmax(logits[start + j], -1).topk(5)
        assert list(ids) == ref.indices.tolist()
        assert probs == pytest.approx(ref.values.tolist(), abs=1e-4)
    wrong = Example.qa("Q?", "4471", system=SYSTEM)
    with pytest.raises(InvalidInputError, match="soft targets"):
        tokenize(gen, [Example(wrong.answer, wrong.prompt, soft=soft[:1])])
    with pytest.raises(InvalidInputError, match="'qa' examples only"):
        teacher_distributions(gen, [Example.text("a passage")])


def test_soft_loss_is_cross_entropy_to_the_teacher_distribution(gen: Generator) -> None:
    import torch
    import torch.nn.functional as F

    pad_id = int(gen.tokenizer.pad_token_id)
    items = tokenize(gen, EXAMPLES[:2])
    hard_batch = collate(items, pad_id, share_prefix=False, device="cpu")
    logits, targets, _ = supervised_logits(gen.model, hard_batch)
    assert token_loss(logits, targets, hard_batch).item() == pytest.approx(
        F.cross_entropy(logits.float(), targets).item(), rel=1e-5
    )
    one_hot = [tuple(((t,), (1.0,)) for t in it.labels if t != IGNORE) for it in items]
    onehot_items = [
        _Item(it.ids, it.labels, it.qa, soft=s) for it, s in zip(items, one_hot, strict=True)
    ]
    onehot_batch = collate(onehot_items, pad_id, share_prefix=False, device="cpu")
    assert onehot_batch.soft_ids is not None and onehot_batch.soft_ids.shape[0] == len(targets)
    assert token_loss(logits, targets, onehot_batch).item() == pytest.approx(
        F.cross_entropy(logits.float(), targets).item(), rel=1e-5
    )  # a one-hot teacher is the hard label
    soft = teacher_distributions(gen, EXAMPLES[:2], k=8)
    mixed = [_Item(items[0].ids, items[0].labels, True, soft=soft[0]), items[1]]
    batch = collate(mixed, pad_id, share_prefix=False, device="cpu")
    logp = F.log_softmax(logits.float(), -1)
    n0 = len(soft[0])
    want = [
        -sum(p / sum(probs) * logp[j, i].item() for i, p in zip(ids, probs, strict=True))
        for j, (ids, probs) in enumerate(soft[0])
    ] + (-logp[torch.arange(n0, len(targets)), targets[n0:]]).tolist()
    assert token_loss(logits, targets, batch).item() == pytest.approx(
        sum(want) / len(want), rel=1e-4
    )


def test_training_on_soft_targets_learns_the_teachers_argmax(gen: Generator) -> None:
    """A teacher sure of the answer token (0.7) with its mass spread on others: the student
    trained on the distributions alone greedily says the answers."""
    items = tokenize(gen, EXAMPLES)
    examples = []
    for ex, it in zip(EXAMPLES, items, strict=True):
        answer = [t for t in it.labels if t != IGNORE]
        soft = tuple(((t, t + 1, t + 2, t + 3), (0.7, 0.1, 0.1, 0.1)) for t in answer)
        examples.append(Example(ex.answer, ex.prompt, soft=soft))
    result = train_lora(gen.path, examples, TrainConfig(**FAST), progress=False)
    assert result.stopped_because == "target" and result.recall == 1.0
    assert result.loss > 0.5  # the spread mass keeps the cross-entropy above 0 (entropy ~0.94)


def test_top_layers_put_lora_on_the_upper_layers_only(
    sharp_model_dir: Path, tmp_path: Path
) -> None:
    import json as _json

    gen = Generator(str(sharp_model_dir))
    n = int(gen.model.config.num_hidden_layers)
    cfg = TrainConfig(**FAST | {"top_layers": 1, "max_steps": 2})
    result = train_lora(gen.path, EXAMPLES, cfg, progress=False)
    layers = {
        int(m.group(1)) for k in result.adapter_state if (m := re.search(r"layers\.(\d+)\.", k))
    }
    assert layers == {n - 1} and result.steps == 2
    out = save_adapter(result, tmp_path / "a")
    assert _json.loads((out / "adapter_config.json").read_text())["layers_to_transform"] == [n - 1]
    with pytest.raises(InvalidInputError, match="top_layers"):
        TrainConfig(top_layers=0)


def test_evaluate_from_judges_before_full_recall(sharp_model_dir: Path) -> None:
    """Soft targets may never give full argmax recall: evaluate_from starts the held-out
    evaluations (and so patience) at a lower recall instead of training to max_steps."""
    calls: list[int] = []

    def evaluate(model: object, gen: Generator) -> float:
        calls.append(1)
        return 0.3

    cfg = TrainConfig(**FAST | {"patience": 2, "evaluate_from": 0.25})
    result = train_lora(str(sharp_model_dir), EXAMPLES, cfg, progress=False, evaluate=evaluate)
    assert result.stopped_because == "plateau" and len(calls) == 3
    first_eval = result.eval_history[0][0]
    recall_then = next(r for step, _, r in result.recall_history if step == first_eval)
    assert recall_then < 1.0  # judged before the trained phrasings were all recalled
    with pytest.raises(InvalidInputError, match="evaluate_from"):
        TrainConfig(evaluate_from=0.0)


def test_frozen_bottom_is_the_full_forward_gradients_included(gen: Generator) -> None:
    """Training the top layers over cached activations of the frozen ones gives the same
    logits and the same LoRA gradients as running the whole model."""
    import torch

    from lora_memory_plugin.consolidation.frozen import FrozenBottom
    from lora_memory_plugin.consolidation.trainer import _attach_lora

    items = tokenize(gen, EXAMPLES[:5])  # different lengths: right padding is exercised
    pad_id = int(gen.tokenizer.pad_token_id)
    model = _attach_lora(gen.model, TrainConfig(rank=4, top_layers=1))
    try:
        for _, p in model.named_parameters():  # B = 0 at init: give the LoRA a real effect
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.05)
        frozen = FrozenBottom.build(model, 1, [it.ids for it in items], pad_id, gen.device)
        assert frozen is not None and frozen.first == len(gen.model.model.layers) - 1
        batch = collate(items, pad_id, False, gen.device)
        model.train()

        def grads(loss: torch.Tensor) -> list[torch.Tensor]:
            params = [p for p in model.parameters() if p.requires_grad]
            return list(torch.autograd.grad(loss, params))

        full, targets, _ = supervised_logits(model, batch)
        keep = next_token_targets(batch) != IGNORE
        g_full = grads(token_loss(full, targets, batch))
        prefix = collate(items, pad_id, True, gen.device).prefix  # the system prompt and more
        assert prefix > len(gen.tokenizer(SYSTEM)["input_ids"]) and frozen.can_share_prefix
        for p in (0, prefix):  # the shared prefix run once, for one row: same logits and grads
            cached = frozen.logits(range(len(items)), batch.mask, keep, p)
            assert torch.allclose(full, cached, atol=1e-4)
            g_cached = grads(token_loss(cached, targets, batch))
            assert all(
                torch.allclose(a, b, atol=1e-5) for a, b in zip(g_full, g_cached, strict=True)
            )
        with pytest.raises(ValueError, match="inside the shared prefix"):
            frozen.logits(range(len(items)), batch.mask, batch.mask.bool(), prefix)
    finally:
        model.unload()
        gen.model.eval()


def test_top_layers_train_over_cached_activations_to_recall(sharp_model_dir: Path) -> None:
    cfg = TrainConfig(**FAST | {"top_layers": 1})
    result = train_lora(str(sharp_model_dir), EXAMPLES, cfg, progress=False)
    assert result.recall == 1.0 and result.stopped_because == "target"


def test_frozen_bottom_declines_what_it_cannot_cache(gen: Generator) -> None:
    from lora_memory_plugin.consolidation.frozen import FrozenBottom

    ids = [tokenize(gen, EXAMPLES[:1])[0].ids]
    pad_id = int(gen.tokenizer.pad_token_id)
    n = len(gen.model.model.layers)
    assert not FrozenBottom.supports(gen.model, n)  # nothing below the top n to freeze
    assert FrozenBottom.build(gen.model, 1, ids, pad_id, gen.device, budget_bytes=8) is None


def test_top_layers_beyond_the_model_mean_every_layer(sharp_model_dir: Path) -> None:
    """consolidation.top_layers = 16 on a 2-layer model trains every layer, as 'all-linear'."""
    gen = Generator(str(sharp_model_dir))
    n = int(gen.model.config.num_hidden_layers)
    cfg = TrainConfig(**FAST | {"top_layers": n + 14, "max_steps": 1})
    result = train_lora(gen.path, EXAMPLES, cfg, progress=False)
    layers = {
        int(m.group(1)) for k in result.adapter_state if (m := re.search(r"layers\.(\d+)\.", k))
    }
    assert layers == set(range(n)) and result.lora_config.layers_to_transform is None
