"""The unit the memory loop scores: a dialogue exchange, an article section, a lecture window.

A chunk is the unit of *search*; an item is the unit of *meaning* a person would keep or drop:
one question with its answer, one section under its heading, one stretch of a lecture. Item ids
derive from the document id and the unit's position key, so an unchanged exchange keeps its id
(and its stored signals) when the conversation grows.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from memory_pipeline.records import Document, Kind, sha256_text, stable_id
from memory_pipeline.scoring.signals import normalize_text
from memory_pipeline.timeutil import naive_utc

_WINDOW_WORDS = 8
_WINDOW_TRIES = 6


class ItemUnit(BaseModel):
    """Where an item sits in its document: turn index, heading path, or time span."""

    model_config = ConfigDict(frozen=True)

    turn_index: int | None = Field(None, description="dialogue: index of the exchange's first turn")
    heading: str | None = Field(None, description="article: heading path joined with ' > '")
    section_index: int | None = Field(
        None, description="article: n-th section with this heading path; lecture: n-th piece of a window"
    )
    page: int | None = None
    start: float | None = Field(None, description="lecture: seconds")
    end: float | None = None

    def key(self) -> str:
        """The position key the item id is derived from."""
        if self.turn_index is not None:
            return f"turn:{self.turn_index}"
        if self.heading is not None:
            return f"section:{self.heading}#{self.section_index or 0}@{self.page or 0}"
        return f"span:{self.start}-{self.end}" + (f"#{self.section_index}" if self.section_index else "")


class Item(BaseModel):
    """One scored unit with the texts the signals read and the chunks its vector comes from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    item_id: str
    doc_id: str
    kind: Kind
    title: str
    source_path: str
    unit: ItemUnit
    text: str
    user_text: str = ""
    answer_text: str = ""
    created_at: datetime | None = None
    chunk_ids: list[str] = Field(default_factory=list)
    vector: np.ndarray | None = Field(None, exclude=True, description="mean of its chunks' vectors, renormalized")

    @property
    def text_hash(self) -> str:
        return sha256_text(self.text)[:32]

    @property
    def vector_key(self) -> str:
        """Changes when the item's chunks change: the vector-based signals must then be recomputed."""
        return sha256_text("\x1f".join(sorted(self.chunk_ids)))[:32] if self.chunk_ids else ""


def build_items(doc: Document, chunks: Sequence[Mapping]) -> list[Item]:
    """The items of one document, each with the ids of the chunks that cover it.

    ``chunks`` are the document's chunk rows (``chunk_id``, ``text``, ``ordinal``, ``turn_index``,
    ``start``, ``end``). Lecture items are the chunk windows themselves, so a lecture that is not
    indexed yet has no items; dialogue and article items exist as soon as the document does.
    """
    if doc.kind is Kind.DIALOGUE:
        return _dialogue_items(doc, chunks)
    if doc.kind in (Kind.ARTICLE, Kind.PROFILE):  # a profile item is one of its sections ("About me", ...)
        return _article_items(doc, chunks)
    return _lecture_items(doc, chunks)


def _item(doc: Document, unit: ItemUnit, **fields) -> Item:
    return Item(
        item_id=stable_id(doc.doc_id, unit.key()),
        doc_id=doc.doc_id,
        kind=doc.kind,
        title=doc.title,
        source_path=doc.source_path,
        unit=unit,
        **fields,
    )


def _doc_time(doc: Document) -> datetime | None:
    return naive_utc(doc.created_at or doc.updated_at)


def _dialogue_items(doc: Document, chunks: Sequence[Mapping]) -> list[Item]:
    """Exchanges: a run of user turns and the run of assistant turns that answers it."""
    starts: list[int] = []
    previous: str | None = None
    for index, turn in enumerate(doc.turns):
        if index == 0 or (turn.role == "user" and previous == "assistant"):
            starts.append(index)
        previous = turn.role
    chunk_ids: dict[int, list[str]] = {s: [] for s in starts}
    for chunk in sorted(chunks, key=lambda c: c.get("ordinal") or 0):
        turn_index = chunk.get("turn_index")
        if turn_index is None or not starts:
            continue
        start = starts[max(0, bisect.bisect_right(starts, int(turn_index)) - 1)]
        chunk_ids[start].append(chunk["chunk_id"])
    items = []
    bounds = [*starts, len(doc.turns)]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        turns = doc.turns[start:stop]
        user = "\n\n".join(t.text for t in turns if t.role == "user").strip()
        answer = "\n\n".join(t.text for t in turns if t.role == "assistant").strip()
        stamps = [t.timestamp for t in turns if t.timestamp is not None]
        items.append(
            _item(
                doc,
                ItemUnit(turn_index=start),
                text="\n\n".join(p for p in (user, answer) if p),
                user_text=user,
                answer_text=answer,
                created_at=naive_utc(stamps[0]) if stamps else _doc_time(doc),
                chunk_ids=chunk_ids[start],
            )
        )
    return items


def _article_items(doc: Document, chunks: Sequence[Mapping]) -> list[Item]:
    """Sections (bounded by the parser) under their heading path; chunks found by their text.

    Chunks are matched to sections by where their words occur in the document, not by the
    heading label, so the mapping holds whatever prefix or overlap the chunker adds.
    """
    seen: dict[tuple[str, int | None], int] = {}
    units: list[ItemUnit] = []
    for section in doc.sections:
        heading = " > ".join(section.heading_path)
        n = seen.get((heading, section.page), 0)
        seen[(heading, section.page)] = n + 1
        units.append(ItemUnit(heading=heading, section_index=n, page=section.page))
    texts = [s.text for s in doc.sections]
    covering = _cover_sections(texts, chunks)
    return [
        _item(doc, unit, text=text, created_at=_doc_time(doc), chunk_ids=covering[i])
        for i, (unit, text) in enumerate(zip(units, texts, strict=True))
    ]


def _cover_sections(texts: Sequence[str], chunks: Sequence[Mapping]) -> list[list[str]]:
    """For each section, the chunks whose text overlaps it (found by word windows)."""
    offsets: list[int] = []
    parts: list[str] = []
    position = 0
    for text in texts:
        offsets.append(position)
        normalized = normalize_text(text)
        parts.append(normalized)
        position += len(normalized) + 1
    body = " ".join(parts)
    covering: list[list[str]] = [[] for _ in texts]
    for chunk in sorted(chunks, key=lambda c: c.get("ordinal") or 0):
        words = normalize_text(_without_header(chunk)).split()
        first = _locate(body, words)
        last = _locate(body, words[::-1], reverse=True)
        if first is None and last is None:
            continue
        lo = first if first is not None else last
        hi = last if last is not None else first
        lo, hi = min(lo, hi), max(lo, hi)
        for index in range(bisect.bisect_right(offsets, lo) - 1, bisect.bisect_right(offsets, hi)):
            if index >= 0:
                covering[index].append(chunk["chunk_id"])
    return covering


def _without_header(chunk: Mapping) -> str:
    """Chunk text without the heading line the chunker puts above article pieces."""
    text, heading = chunk.get("text") or "", chunk.get("heading")
    return text[len(heading) :] if heading and text.startswith(heading) else text


def _locate(body: str, words: Sequence[str], *, reverse: bool = False) -> int | None:
    """Position in ``body`` of a short word window near the start of ``words`` (or the end, reversed)."""
    for attempt in range(_WINDOW_TRIES):
        window = list(words[attempt * 2 : attempt * 2 + _WINDOW_WORDS])
        if not window:
            return None
        if reverse:
            window.reverse()
        found = body.find(" ".join(window))
        if found >= 0:
            return found
    return None


def _lecture_items(doc: Document, chunks: Sequence[Mapping]) -> list[Item]:
    """Each indexed lecture window is an item, keyed by its time span (or position when untimed).

    A window too long for one chunk is split into pieces with the same span: ``section_index``
    numbers them, so each piece keeps its own stable id.
    """
    items = []
    seen: dict[tuple[float | None, float | None], int] = {}
    for chunk in sorted(chunks, key=lambda c: c.get("ordinal") or 0):
        start, end = chunk.get("start"), chunk.get("end")
        if start is None and end is None:
            start = end = float(chunk.get("ordinal") or 0)
        n = seen.get((start, end), 0)
        seen[(start, end)] = n + 1
        items.append(
            _item(
                doc,
                ItemUnit(start=start, end=end, section_index=n or None),
                text=chunk.get("text") or "",
                created_at=_doc_time(doc),
                chunk_ids=[chunk["chunk_id"]],
            )
        )
    return items


def mean_vector(vectors: np.ndarray) -> np.ndarray | None:
    """Mean of chunk vectors, renormalized to unit length (None when there are none)."""
    if len(vectors) == 0:
        return None
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None
