"""Judge an adapter: perplexity on the user's eval set and on general held-out text, and its answers to prompts.

Perplexity is exp(mean token loss) over the tokens training learns (assistant turns; all of a plain
text), so eval figures are comparable with the training objective and between versions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memory_pipeline.adapters import judge
from memory_pipeline.adapters.base_model import unused_adapter_name
from memory_pipeline.adapters.data import (
    IGNORE_INDEX,
    Encoded,
    Example,
    collate,
    encode_example,
    read_examples,
    read_split,
)
from memory_pipeline.adapters.generation import answer_prompts
from memory_pipeline.config import AdapterConfig, Config


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


def perplexity(
    model: Any, tokenizer: Any, examples: Sequence[Example], *, max_seq_length: int, batch_size: int
) -> Perplexity:
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
            batch = {
                k: v.to(device)
                for k, v in collate(encoded[start : start + batch_size], pad_id=tokenizer.pad_token_id).items()
            }
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            targets = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
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


@dataclass(frozen=True)
class GenerationReport:
    """The adapter's and the base's answers to the gate prompts, judged, and how close each comes to the user's
    own answers on eval prompts (None when the eval split has none)."""

    adapter: dict[str, float | int]
    base: dict[str, float | int]
    similarity_adapter: float | None
    similarity_base: float | None
    similarity_examples: int
    answers: list[dict]  # per gate prompt: prompt, base and adapter answer with their figures
    samples: list[dict]  # per eval prompt: prompt, the user's answer, base and adapter answers

    def metrics(self) -> dict:
        """What metrics.json keeps (the answers themselves go to samples.json)."""
        return {
            "generation": {"adapter": self.adapter, "base": self.base},
            "similarity_adapter": self.similarity_adapter,
            "similarity_base": self.similarity_base,
            "similarity_examples": self.similarity_examples,
        }


def judge_generation(
    model: Any, tokenizer: Any, config: Config, adapter: AdapterConfig, dataset_dir: Path
) -> GenerationReport:
    """Answer the adapter's gate prompts with the adapter on and off; answer eval prompts and compare with the user.

    The eval prompts' reference answers are the user's own words when the adapter learns the user's voice; then the
    pipeline's embedder scores base and adapter answers by cosine similarity to them.
    """
    gate, settings = config.gate, config.generation
    prompts = adapter.gate_prompts or gate.prompts

    def answer(items: Sequence[Any], max_new_tokens: int) -> list[str]:
        return answer_prompts(
            model, tokenizer, items, settings, max_new_tokens=max_new_tokens, system_prompt=adapter.system_prompt
        )

    with model.disable_adapter():
        base_answers = answer(prompts, gate.max_new_tokens)
    adapter_answers = answer(prompts, gate.max_new_tokens)
    base_figures = [judge.figure_answer(p, a) for p, a in zip(prompts, base_answers, strict=False)]
    adapter_figures = [judge.figure_answer(p, a) for p, a in zip(prompts, adapter_answers, strict=False)]
    answers = [
        {"prompt": p, "base": asdict(b), "adapter": asdict(a)}
        for p, b, a in zip(prompts, base_figures, adapter_figures, strict=False)
    ]

    count = max(config.training.sample_prompts, gate.similarity_examples if adapter.voice == "user" else 0)
    chats = [e for e in _spread(read_split(Path(dataset_dir), "eval"), 10 * max(count, 1)) if e.messages][:count]
    eval_prompts = [list(e.messages[:-1]) for e in chats]
    references = [e.messages[-1]["content"] for e in chats]
    with model.disable_adapter():
        eval_base = answer(eval_prompts, config.training.sample_max_new_tokens)
    eval_adapter = answer(eval_prompts, config.training.sample_max_new_tokens)
    samples = [
        {"prompt": p, "reference": r, "base": b, "adapter": a}
        for p, r, b, a in zip(eval_prompts, references, eval_base, eval_adapter, strict=False)
    ]
    similarity_adapter = similarity_base = None
    scored = min(len(chats), gate.similarity_examples) if adapter.voice == "user" else 0
    if scored:
        similarity_base = _mean_similarity(config, references[:scored], eval_base[:scored])
        similarity_adapter = _mean_similarity(config, references[:scored], eval_adapter[:scored])
    return GenerationReport(
        adapter=judge.summarise(adapter_figures),
        base=judge.summarise(base_figures),
        similarity_adapter=similarity_adapter,
        similarity_base=similarity_base,
        similarity_examples=scored,
        answers=answers,
        samples=samples,
    )


def _mean_similarity(config: Config, references: Sequence[str], answers: Sequence[str]) -> float:
    """Mean cosine between each answer and its reference, with the pipeline's own embedder (normalised vectors)."""
    from memory_pipeline.index.embedding import load_embedder

    embedder = load_embedder(config.embedding)
    refs = embedder.embed_passages(list(references))
    said = embedder.embed_passages([a or " " for a in answers])
    return round(float((refs * said).sum(axis=1).mean()), 4)
