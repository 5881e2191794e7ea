"""Judge an adapter: perplexity on the user's eval set and on general held-out text, plus readable samples.

Perplexity is exp(mean token loss) over the tokens training learns (assistant turns; all of a plain
text), so eval figures are comparable with the training objective and between versions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_pipeline.adapters.combine import unused_adapter_name
from memory_pipeline.adapters.train import IGNORE_INDEX, Encoded, Example, collate, encode_example, read_examples, read_split

@dataclass(frozen=True)
class Perplexity:
    ppl: float | None  # None when there was no token to score
    tokens: int
    examples: int


@dataclass(frozen=True)
class EvalMetrics:
    eval_ppl_base: float | None
    eval_ppl_adapter: float | None
    eval_ppl_previous: float | None
    heldout_ppl_base: float | None
    heldout_ppl_adapter: float | None
    heldout_ppl_previous: float | None
    eval_tokens: int
    eval_examples: int
    heldout_tokens: int
    heldout_examples: int


def perplexity(model: Any, tokenizer: Any, examples: Sequence[Example], *, max_seq_length: int, batch_size: int) -> Perplexity:
    """exp(total loss / scored tokens) with the model as it is set up now (adapter on, off, or another)."""
    import torch

    encoded: list[Encoded] = [encode_example(tokenizer, e, max_seq_length=max_seq_length) for e in examples]
    encoded = [e for e in encoded if e.supervised > 0]
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = {k: v.to(device) for k, v in collate(encoded[start : start + batch_size], pad_id=tokenizer.pad_token_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            targets = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            total += float(loss)
            count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    if count == 0:
        return Perplexity(None, 0, len(encoded))
    mean = total / count
    return Perplexity(math.exp(mean) if mean < 700 else math.inf, count, len(encoded))


def evaluate_adapter(
    model: Any,
    tokenizer: Any,
    dataset_dir: Path,
    *,
    previous_path: Path | None = None,
    max_examples: int = 200,
    max_seq_length: int = 512,
    batch_size: int = 4,
) -> EvalMetrics:
    """Score the PEFT model's active adapter against the base (adapter disabled) and the previous current adapter."""
    dataset_dir = Path(dataset_dir)
    eval_set = _spread(read_split(dataset_dir, "eval"), max_examples)
    heldout = read_examples(dataset_dir / "heldout.jsonl", limit=max_examples)

    def score(examples: list[Example]) -> Perplexity:
        return perplexity(model, tokenizer, examples, max_seq_length=max_seq_length, batch_size=batch_size)

    active = model.active_adapter
    eval_adapter, held_adapter = score(eval_set), score(heldout)
    with model.disable_adapter():
        eval_base, held_base = score(eval_set), score(heldout)
    eval_previous = held_previous = None
    if previous_path is not None:
        name = unused_adapter_name(model, "previous")
        model.load_adapter(str(previous_path), adapter_name=name)
        model.set_adapter(name)
        try:
            eval_previous, held_previous = score(eval_set).ppl, score(heldout).ppl
        finally:
            model.set_adapter(active)
            model.delete_adapter(name)
    return EvalMetrics(
        eval_ppl_base=eval_base.ppl,
        eval_ppl_adapter=eval_adapter.ppl,
        eval_ppl_previous=eval_previous,
        heldout_ppl_base=held_base.ppl,
        heldout_ppl_adapter=held_adapter.ppl,
        heldout_ppl_previous=held_previous,
        eval_tokens=eval_adapter.tokens,
        eval_examples=eval_adapter.examples,
        heldout_tokens=held_adapter.tokens,
        heldout_examples=held_adapter.examples,
    )


def _spread(examples: list[Example], limit: int) -> list[Example]:
    """At most ``limit`` examples taken evenly over the split, so a topic set's text lines (stored
    after its chat lines) are scored too, not only the first ``limit`` chat examples."""
    if len(examples) <= limit:
        return examples
    step = len(examples) / limit
    return [examples[int(i * step)] for i in range(limit)]


def sample_generations(model: Any, tokenizer: Any, prompts: Sequence[str | list[dict[str, str]]], max_new_tokens: int = 64) -> list[str]:
    """Greedy answers to each prompt (a user message or a message list), for a person to compare by eye."""
    import torch

    device = next(model.parameters()).device
    answers = []
    was_training = model.training
    model.eval()
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    model.train(was_training)
    return answers
