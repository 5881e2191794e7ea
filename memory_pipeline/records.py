"""Typed records shared by every stage: the normalized document every parser returns.

One record shape for dialogues, articles and lectures keeps the later stages (chunking,
scoring, training sets) independent of where the text came from.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Kind(StrEnum):
    """What a document is; each kind has its own chunking and scoring rules.

    A *profile* is what the user wrote about himself (custom instructions, project instructions):
    no folder holds profiles, they come out of the dialogue exports that carry them.
    """

    DIALOGUE = "dialogue"
    ARTICLE = "article"
    LECTURE = "lecture"
    PROFILE = "profile"


SOURCE_KINDS = (Kind.DIALOGUE, Kind.ARTICLE, Kind.LECTURE)
"""The kinds with source folders of their own, each ingested (and watched) on its own."""


class RepairReport(BaseModel):
    """What text repair did to a document, so a person can see whether it was touched and how."""

    model_config = ConfigDict(frozen=True)

    repaired: bool = False
    codec: str | None = Field(None, description="codec the mojibake was undone with, e.g. 'mac_roman'")
    lines_repaired: int = 0
    junk_removed: int = Field(0, description="BOM / zero-width / control characters removed")
    normalized_nfc: bool = Field(False, description="text changed under NFC normalization")
    source_encoding: str = Field("utf-8", description="encoding the file's bytes were decoded with")

    def merge(self, other: RepairReport) -> RepairReport:
        """Combine reports of several pieces of one document (e.g. messages of a JSON export)."""
        return RepairReport(
            repaired=self.repaired or other.repaired,
            codec=self.codec or other.codec,
            lines_repaired=self.lines_repaired + other.lines_repaired,
            junk_removed=self.junk_removed + other.junk_removed,
            normalized_nfc=self.normalized_nfc or other.normalized_nfc,
            source_encoding=self.source_encoding,
        )


class Turn(BaseModel):
    """One message of a dialogue, in the order the user saw it."""

    role: Literal["user", "assistant"]
    text: str
    author: str | None = Field(None, description="label as exported, e.g. 'User', 'Assistant', 'Claude'")
    model: str | None = Field(None, description="model name when the export records it")
    timestamp: datetime | None = None
    message_id: str | None = None
    source_file: str | None = Field(
        None, description="the file the message was read from, where the document spans several"
    )


class Section(BaseModel):
    """A block of an article: its heading path (outermost first) and text; page when known."""

    heading_path: list[str] = Field(default_factory=list)
    text: str
    page: int | None = Field(None, description="1-based page number (PDF)")


class Segment(BaseModel):
    """A stretch of a lecture transcript with its time span in seconds and speaker when known."""

    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    text: str


class Document(BaseModel):
    """A normalized document: the single record shape every parser yields.

    ``doc_id`` is stable across runs: derived from the export's own conversation id where
    there is one, else from the file's bytes, so moving a file or touching its mtime does
    not create a new document.
    """

    doc_id: str
    kind: Kind
    format: str = Field(description="parser that produced it, e.g. 'chatgpt_json', 'nexus_md', 'pdf', 'srt'")
    title: str
    source_path: str
    source_hash: str = Field(description="sha256 of the source file's bytes")
    content_hash: str = Field("", description="sha256 of the normalized content; filled by finalize()")
    external_id: str | None = Field(None, description="the export's own id (conversation id, UID)")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    language: str = Field("unknown", description="'ru', 'en', 'mixed', 'other' or 'unknown'")
    turns: list[Turn] = Field(default_factory=list)
    sections: list[Section] = Field(default_factory=list)
    segments: list[Segment] = Field(default_factory=list)
    repair: RepairReport = Field(default_factory=RepairReport)
    metadata: dict[str, str] = Field(default_factory=dict)

    def n_units(self) -> int:
        """Turns, sections or segments, whichever the kind has: the size ingest and listings compare."""
        return len(self.turns) + len(self.sections) + len(self.segments)

    def body_text(self) -> str:
        """All text of the document in reading order, for hashing, language guess and previews."""
        if self.kind is Kind.DIALOGUE:
            return "\n\n".join(t.text for t in self.turns)
        if self.kind in (Kind.ARTICLE, Kind.PROFILE):
            return "\n\n".join(s.text for s in self.sections)
        return "\n".join(s.text for s in self.segments)

    def finalize(self) -> Document:
        """Fill content hash and language guess from the body; parsers call this last."""
        body = self.body_text()
        payload = json.dumps(
            {
                "title": self.title,
                # without an unset source_file, so documents parsed before it existed keep their hash
                "turns": [
                    t.model_dump(mode="json", exclude=None if t.source_file else {"source_file"}) for t in self.turns
                ],
                "sections": [s.model_dump(mode="json") for s in self.sections],
                "segments": [s.model_dump(mode="json") for s in self.segments],
            },
            ensure_ascii=False,
            sort_keys=True,
        )
        update = {"content_hash": sha256_text(payload)}
        if self.language == "unknown":
            update["language"] = guess_language(body)
        return self.model_copy(update=update)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def stable_id(*parts: str) -> str:
    """A short, stable id from its parts (hex, 20 chars = 80 bits: no collisions at personal scale)."""
    return sha256_text("\x1f".join(parts))[:20]


def partition_of(key: str, partitions: int) -> int:
    """The hash range ``key`` (a document id, a source path) falls in: the top 64 bits of its sha256,
    scaled to ``partitions`` ranges. The same key lands in the same range on every machine and run."""
    top = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return (top * partitions) >> 64


_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")


def guess_language(text: str) -> str:
    """Cheap script-based guess: Cyrillic vs Latin letter ratio. Enough to route stemmers and filters.

    Counted with regexes over a sample, since this runs once per document on large exports.
    """
    sample = text[:8000]
    letters = len(_LETTER.findall(sample))
    if letters < 3:
        return "unknown"
    cyrillic = len(_CYRILLIC.findall(sample)) / letters
    latin = len(_LATIN.findall(sample)) / letters
    if cyrillic >= 0.6:
        return "ru"
    if latin >= 0.6:
        return "en"
    if 1 - cyrillic - latin >= 0.6:
        return "other"
    return "mixed"


USER_LABEL, ASSISTANT_LABEL = "User", "Assistant"
"""How a dialogue chunk's text names its turns: ``User: question`` then ``Assistant: answer``."""


class Chunk(BaseModel):
    """A piece of a document that is embedded and indexed; the unit of search.

    ``chunk_id`` derives from the document's lineage and the chunk's own text, so an unchanged
    chunk keeps its id (its FAISS row, cached vector and search-log usage) when its document is
    edited elsewhere, although the edited file is a new document (see ``index.sync.plan_lineages``).
    ``row_id`` is the same identity as a positive 63-bit integer, the id FAISS and LanceDB rows share.
    """

    chunk_id: str
    doc_id: str
    lineage: str = Field(
        default_factory=lambda data: data["doc_id"],
        description="what the document's chunk ids derive from: its doc_id, or the lineage of the version it replaced",
    )
    kind: Kind
    title: str
    source_path: str
    text: str = Field(description="the text that is embedded, indexed and shown")
    text_hash: str = Field(description="sha256 of text; the embedding cache key with the model id")
    ordinal: int = Field(description="position of the chunk within its document")
    turn_index: int | None = Field(None, description="dialogue: index of the exchange's user turn")
    page: int | None = None
    start: float | None = Field(None, description="lecture: seconds")
    end: float | None = None
    speaker: str | None = None
    heading: str | None = None
    created_at: datetime | None = None
    language: str = "unknown"
    source_file: str | None = Field(
        None, description="dialogue: the exchange's own file, where the conversation spans several"
    )

    @property
    def row_id(self) -> int:
        return chunk_row_id(self.chunk_id)


def chunk_row_id(chunk_id: str) -> int:
    """The 63-bit integer id of a chunk (positive int64, as FAISS ids must be)."""
    return int(chunk_id[:16], 16) & 0x7FFF_FFFF_FFFF_FFFF
