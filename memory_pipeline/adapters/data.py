"""What adapters train and are judged on: examples read from a dataset version, and their token encoding.

Shared by training, evaluation and the chat, so none of those modules imports another for its data types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_pipeline.datasets.card import DatasetCard
from memory_pipeline.datasets.card import read_card as dataset_card
from memory_pipeline.datasets.versions import data_files
from memory_pipeline.errors import ParseError

IGNORE_INDEX = -100
DATASET_FILES = ("train.jsonl", "eval.jsonl", "heldout.jsonl", "card.json")
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One training line: a chat (``messages``) or a plain completion (``text``)."""

    messages: tuple[dict[str, str], ...] | None = None
    text: str | None = None

    @property
    def key(self) -> str:
        """Content hash, to tell new examples from ones an earlier dataset version already had."""
        payload = {"messages": list(self.messages)} if self.messages is not None else {"text": self.text}
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def parse_example(obj: Any) -> Example:
    """Validate one decoded JSONL line; raises ValueError with the reason."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if ("messages" in obj) == ("text" in obj):
        raise ValueError("needs exactly one of 'messages' (chat) or 'text' (completion)")
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"].strip():
            raise ValueError("'text' must be a non-empty string")
        return Example(text=obj["text"])
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in _ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ValueError(f"message {i} needs 'role' in {_ROLES} and string 'content'")
    roles = [m["role"] for m in messages]
    turns = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(turns) // 2)
    if not turns or turns != expected:
        raise ValueError(f"roles must be [system,] user, assistant, user, ... ending with assistant; got {roles}")
    return Example(messages=tuple({"role": m["role"], "content": m["content"]} for m in messages))


def read_examples(path: Path, *, limit: int | None = None) -> list[Example]:
    """Read a JSONL file of examples (first ``limit``); a bad line raises ParseError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ParseError(path, "file does not exist")
    examples: list[Example] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                examples.append(parse_example(json.loads(line)))
            except ValueError as exc:
                raise ParseError(path, f"line {number}: {exc}") from None
    return examples


def read_split(dataset_dir: Path, split: str) -> list[Example]:
    """A version's whole split: its chat file, then its text file when it has one."""
    return [example for path in data_files(dataset_dir, split) for example in read_examples(path)]


def read_card(dataset_dir: Path) -> DatasetCard:
    """The dataset version's card, after checking the folder holds every file training needs."""
    for name in DATASET_FILES:
        if not (dataset_dir / name).is_file():
            raise ParseError(dataset_dir / name, "missing from the dataset version folder")
    return dataset_card(dataset_dir)


def encode_example(tokenizer: Any, example: Example, *, max_seq_length: int) -> Encoded:
    """Token ids and labels: chat examples learn only the assistant turns (end token included), text learns all."""
    if example.text is not None:
        ids = tokenizer(example.text, add_special_tokens=True)["input_ids"][:max_seq_length]
        return Encoded(ids, list(ids))
    messages = list(example.messages or ())
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (rendered.startswith(through) and through.startswith(prompt)):
            raise ValueError(
                "the chat template does not render conversations prefix-stably; cannot locate assistant turns"
            )
        spans.append((len(prompt), len(through.rstrip())))
    tokens = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids = tokens["input_ids"][:max_seq_length]
    labels = [
        token if any(end > lo and start < hi for lo, hi in spans) else IGNORE_INDEX
        for token, (start, end) in zip(ids, tokens["offset_mapping"], strict=False)
    ]
    return Encoded(list(ids), labels)


def collate(batch: Sequence[Encoded], *, pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
