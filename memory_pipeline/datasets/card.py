"""The dataset card (``card.json``): the contract between the dataset stage and everything that reads a version.

One model and one reader/writer, so the trainer, the CLI and the Dagster UI read the same fields the same way.
Every field added after the first cards were written has a default, so versions built by older code still load;
fields this code does not know are kept (``extra="allow"``), so a newer card read here loses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memory_pipeline.errors import ParseError, validation_problems

CARD_FILE = "card.json"


def key_values(mapping: dict[str, Any]) -> str:
    """A card's counts and details as one line (``key: value, ...``; nested values as JSON), for the
    card's markdown and the UI's metadata alike."""

    def show(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)

    return ", ".join(f"{k}: {show(v)}" for k, v in mapping.items()) or "-"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class CardCounts(_Part):
    train: int = 0
    eval: int = 0
    heldout: int = 0
    promoted_items: int = 0
    examples_built: int = 0


class TokenStats(_Part):
    total: int = 0
    mean: float = 0.0
    p50: int = 0
    p95: int = 0
    max: int = 0


class CardTokens(_Part):
    encoding: str = ""
    train: TokenStats = Field(default_factory=TokenStats)
    eval: TokenStats = Field(default_factory=TokenStats)
    heldout_total: int = 0


class SplitCounts(_Part):
    train: int = 0
    eval: int = 0


class CardSources(_Part):
    documents: SplitCounts = Field(default_factory=SplitCounts)
    kinds: dict[str, int] = Field(default_factory=dict)
    targets: dict[str, int] = Field(default_factory=dict)  # whose text the targets are; cards before it have none
    line_formats: dict[str, int] = Field(default_factory=dict)
    document_formats: dict[str, int] = Field(default_factory=dict)


class CardScores(_Part):
    rag_threshold: float = 0.0
    lora_threshold: float = 0.0
    min: float = 0.0
    mean: float = 0.0
    max: float = 0.0


class CurationStep(_Part):
    """One curation step's line: what it removed, plus whatever details that step reports (kept as extra fields)."""

    step: str
    removed: int = 0

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CardAdapterConfig(_Part):
    voice: str = "user"
    system_prompt: str | None = None
    description: str = ""


class DataFileEntry(_Part):
    split: str
    format: str
    examples: int


class CardFiles(_Part):
    data: dict[str, DataFileEntry] = Field(default_factory=dict)  # cards before the chat/text split have none
    heldout: str = "heldout.jsonl"
    items: str = "items.jsonl"
    exports: dict[str, str] = Field(default_factory=dict)


class DatasetCard(_Part):
    """What is in a dataset version, where it came from, and what curation removed."""

    version: str
    adapter: str
    created_at: str = ""
    parent: str | None = None
    content_hash: str
    counts: CardCounts = Field(default_factory=CardCounts)
    tokens: CardTokens = Field(default_factory=CardTokens)
    sources: CardSources = Field(default_factory=CardSources)
    scores: CardScores = Field(default_factory=CardScores)
    filters: list[CurationStep] = Field(default_factory=list)
    adapter_config: CardAdapterConfig = Field(default_factory=CardAdapterConfig)
    datasets_config: dict[str, Any] = Field(default_factory=dict)
    files: CardFiles = Field(default_factory=CardFiles)


def card_bytes(card: DatasetCard) -> bytes:
    """The card as written into a version folder (the folder is staged and renamed whole, so this is atomic)."""
    return (json.dumps(card.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def read_card(version_dir: Path) -> DatasetCard:
    """The card of a dataset version; a missing, unreadable or incomplete card names its file."""
    path = Path(version_dir) / CARD_FILE
    if not path.is_file():
        raise ParseError(path, "dataset card is missing")
    try:
        return DatasetCard.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ParseError(path, f"not a dataset card: {validation_problems(exc, 'card')}") from None
