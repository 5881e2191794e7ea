"""Training-line formats: OpenAI-style chat ``messages`` for dialogues, ``{"text": ...}`` for the rest.

Pure functions of a document and a position, so the rules (alternation, merging, voice) can be
tested without any store. Every chat line is ``[system,] user, assistant, ..., assistant``, the
shape chat templates, TRL's SFTTrainer, LLaMA-Factory (sharegpt) and axolotl (chat_template) accept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from memory_pipeline.records import Document, guess_language

Role = Literal["system", "user", "assistant"]
Message = dict[str, str]
Voice = Literal["user", "assistant"]

# Roughly what a chat template adds around each message (ChatML: start token, role, newlines, end token).
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True)
class Run:
    """Consecutive turns of one speaker merged into one message; ``first_turn`` is the first one's index."""

    role: Literal["user", "assistant"]
    text: str
    first_turn: int


@dataclass(frozen=True)
class ChatExample:
    """A chat line and the text that identifies it (prompt and target, without context or system)."""

    messages: list[Message]
    key_text: str
    target_role: Literal["user", "assistant"] = "assistant"  # who wrote the learned turn in the original dialogue


def normalize_messages(messages: Sequence[Message], *, system: str = "") -> list[Message]:
    """Strict alternation: system first (only if given or present), then user/assistant turns.

    Empty messages are dropped, consecutive same-role messages merged with a blank line, system
    messages found among the turns joined into the leading one, leading assistant turns dropped
    (a chat starts with the user) and trailing user turns trimmed (the last message is a target).
    Returns an empty list when no assistant turn is left.
    """
    systems = [system.strip()] if system.strip() else []
    turns: list[Message] = []
    for message in messages:
        role, content = message["role"], message["content"].strip()
        if not content:
            continue
        if role == "system":
            systems.append(content)
        elif turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n\n" + content}
        else:
            turns.append({"role": role, "content": content})
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    while turns and turns[-1]["role"] != "assistant":
        turns.pop()
    if not turns:
        return []
    head = [{"role": "system", "content": "\n\n".join(systems)}] if systems else []
    return head + turns


def runs_of(doc: Document) -> list[Run]:
    """The conversation as alternating runs: consecutive same-role turns merged, empty turns skipped."""
    runs: list[Run] = []
    for index, turn in enumerate(doc.turns):
        text = turn.text.strip()
        if not text:
            continue
        if runs and runs[-1].role == turn.role:
            last = runs[-1]
            runs[-1] = Run(last.role, last.text + "\n\n" + text, last.first_turn)
        else:
            runs.append(Run(turn.role, text, index))
    return runs


def exchange_bounds(doc: Document, turn_index: int) -> tuple[int, int]:
    """Turn span ``[start, stop)`` of the exchange starting at ``turn_index``: user turns, then their answers."""
    if not 0 <= turn_index < len(doc.turns):
        raise ValueError(f"turn_index {turn_index} outside the dialogue's {len(doc.turns)} turns")
    stop = turn_index + 1
    while stop < len(doc.turns) and not (doc.turns[stop].role == "user" and doc.turns[stop - 1].role == "assistant"):
        stop += 1
    return turn_index, stop


def neutral_prompt(title: str, language: str) -> str:
    """A prompt for a target with nothing before it: the conversation's topic, in its language."""
    title = " ".join(title.split())
    title_language = guess_language(title)
    russian = title_language == "ru" or (title_language not in ("en", "ru") and language in ("ru", "mixed"))
    if russian:
        return f"Продолжи разговор на тему: {title}" if title else "Продолжи разговор."
    return f"Continue the conversation about: {title}" if title else "Continue the conversation."


def chat_example(
    doc: Document,
    turn_index: int,
    *,
    voice: Voice,
    system_prompt: str,
    context_tokens: int,
    count_tokens: Callable[[str], int],
) -> ChatExample | None:
    """The chat line teaching the exchange at ``turn_index``; None when the exchange has no target.

    Voice ``assistant`` learns the assistant's answer to the user's turns. Voice ``user`` (the core
    adapter: the person is the user of their chat exports) swaps roles, so the person's own turns
    are the targets and the assistant turn before them is the prompt. Earlier turns are kept as
    context, newest first, while they fit in ``context_tokens``.
    """
    start, stop = exchange_bounds(doc, turn_index)
    runs = runs_of(doc)
    if voice == "user":
        runs = [Run("assistant" if r.role == "user" else "user", r.text, r.first_turn) for r in runs]
    target = next((i for i, r in enumerate(runs) if start <= r.first_turn < stop and r.role == "assistant"), None)
    if target is None:
        return None
    kept = [runs[target]]
    if target > 0:
        kept.insert(0, runs[target - 1])
    budget = context_tokens
    for run in reversed(runs[: max(target - 1, 0)]):
        cost = count_tokens(run.text) + MESSAGE_OVERHEAD_TOKENS
        if cost > budget:
            break
        budget -= cost
        kept.insert(0, run)
    messages = [{"role": r.role, "content": r.text} for r in kept]
    if messages[0]["role"] == "assistant":
        messages.insert(0, {"role": "user", "content": neutral_prompt(doc.title, doc.language)})
    normalized = normalize_messages(messages, system=system_prompt)
    prompt, answer = normalized[-2]["content"], normalized[-1]["content"]
    return ChatExample(
        messages=normalized, key_text=prompt + "\n\n" + answer, target_role="user" if voice == "user" else "assistant"
    )


def text_example(text: str, *, heading: str | None = None) -> dict[str, str] | None:
    """A completion line for an article section (under its heading) or a lecture stretch."""
    body = text.strip()
    if not body:
        return None
    heading = (heading or "").strip()
    if heading and not body.startswith(heading):
        body = f"{heading}\n\n{body}"
    return {"text": body}


def example_texts(record: dict) -> list[str]:
    """The texts of a line that carry content (system prompts excluded: they are the same everywhere)."""
    if "text" in record:
        return [record["text"]]
    return [m["content"] for m in record["messages"] if m["role"] != "system"]
