"""Answers from a loaded model: one place that applies the chat template and the generation settings.

Why the repetition penalty is on by default: the bundled 135M SmolLM2 is English-first (its tokenizer even splits
Cyrillic letters into byte pieces); asked in Russian under greedy decoding, its most likely continuation is the
prompt itself («Что ты думаешь о локальных LLM?» answered with the same line again), while the chat template,
special tokens and dequantized weights are as the model expects (English prompts get answers). The penalty also
covers the prompt's tokens, so copying stops being the cheapest path and the model writes an answer (a weak one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memory_pipeline.config import GenerationConfig


def with_system_prompt(messages: Sequence[Mapping[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """The messages as the adapter saw them in training: its system prompt first, unless one is given."""
    messages = [dict(m) for m in messages]
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def generate_reply(
    model: Any,
    tokenizer: Any,
    messages: Sequence[Mapping[str, str]],
    settings: GenerationConfig,
    *,
    max_new_tokens: int | None = None,
    streamer: Any = None,
) -> str:
    """The assistant's next turn after ``messages``, rendered with the tokenizer's own chat template.

    Generation stops at the template's end-of-turn token; ``streamer`` (a transformers streamer) receives
    the tokens as they come.
    """
    import torch

    device = next(model.parameters()).device
    inputs = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if settings.do_sample:
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    else:  # None overrides a base's own sampling defaults, which greedy decoding would warn about
        sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens or settings.max_new_tokens,
                repetition_penalty=settings.repetition_penalty,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                streamer=streamer,
                **sampling,
            )
    finally:
        model.train(was_training)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def answer_prompts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[Mapping[str, str]]],
    settings: GenerationConfig,
    *,
    max_new_tokens: int | None = None,
    system_prompt: str = "",
) -> list[str]:
    """One reply per prompt (a user message, or a message list), with the model as it is set up now."""
    replies = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        messages = with_system_prompt(messages, system_prompt)
        replies.append(generate_reply(model, tokenizer, messages, settings, max_new_tokens=max_new_tokens))
    return replies
