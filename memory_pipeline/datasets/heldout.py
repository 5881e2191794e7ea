"""The general held-out set: text that is not the user's, for the adapter stage's forgetting check.

The same small set ships with every dataset version, so an adapter's perplexity on it can be
compared with the base model's and with earlier adapters': a rise means it forgot general language.
"""

from __future__ import annotations

import json
from pathlib import Path

from memory_pipeline.errors import ParseError

GENERAL_HELDOUT = Path(__file__).with_name("general_heldout.jsonl")


def general_heldout(path: Path = GENERAL_HELDOUT) -> list[dict[str, str]]:
    """The held-out lines as ``{"text": ...}``; a malformed line raises ParseError naming file and line."""
    lines: list[dict[str, str]] = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ParseError(path, f"line {number}: not valid JSON: {exc}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
                raise ParseError(path, f"line {number}: expected an object with a non-empty 'text' string")
            lines.append({"text": obj["text"]})
    if not lines:
        raise ParseError(path, "the general held-out set is empty")
    return lines
