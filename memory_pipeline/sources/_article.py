"""Helpers the article and lecture parsers share: document identity, titles, paragraphs, sections.

Identity is by content (sha256 of the file's bytes), so a moved or renamed file keeps its
``doc_id``; the grouping rules live here so every article format cuts sections the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from memory_pipeline.records import Document, Kind, RepairReport, Section, Segment, stable_id
from memory_pipeline.sources.archive import ArchiveMember

# Sections stay readable units for the chunker; a longer run of paragraphs under one heading
# is cut into several sections with the same heading path.
MAX_SECTION_CHARS = 4000
SHORT_LINE_CHARS = 100

_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
_SPACES = re.compile(r"[ \t\u00a0]+")
_END_PUNCTUATION = tuple(".,;:!?…")


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks so large files do not sit in memory twice."""
    if isinstance(path, ArchiveMember):
        return path.content_hash()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def readable_stem(path: Path) -> str:
    """A title from the file name: ``marathon_pacing_2024`` -> ``marathon pacing 2024``."""
    return _SPACES.sub(" ", path.stem.replace("_", " ")).strip() or path.name


def normalize_newlines(text: str) -> str:
    """Windows and old Mac line ends as ``\n``, so line-based rules see one kind of line."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def collapse_spaces(line: str) -> str:
    return _SPACES.sub(" ", line).strip()


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each stripped of trailing spaces per line; empty blocks dropped."""
    blocks = []
    for block in _BLANK_LINES.split(normalize_newlines(text)):
        lines = [line.rstrip() for line in block.strip("\n").split("\n")]
        if any(line.strip() for line in lines):
            blocks.append("\n".join(lines).strip())
    return blocks


def looks_like_heading(line: str) -> bool:
    """A lone short line without closing punctuation, starting with a capital or a number."""
    line = line.strip()
    if not line or "\n" in line or len(line) > SHORT_LINE_CHARS:
        return False
    if line.endswith(_END_PUNCTUATION) or line[0] in "-–—•*>|":
        return False
    return (line[0].isupper() or line[0].isdigit()) and any(ch.isalpha() for ch in line)


def group_sections(
    blocks: Iterable[tuple[tuple[str, ...], str]], *, page: int | None = None, max_chars: int = MAX_SECTION_CHARS
) -> list[Section]:
    """Join consecutive paragraphs under the same heading path into sections of bounded size."""
    sections: list[Section] = []
    path: tuple[str, ...] | None = None
    parts: list[str] = []
    size = 0

    def flush() -> None:
        if parts:
            sections.append(Section(heading_path=list(path or ()), text="\n\n".join(parts), page=page))

    for heading_path, text in blocks:
        text = text.strip()
        if not text:
            continue
        if heading_path != path or (parts and size + len(text) > max_chars):
            flush()
            path, parts, size = heading_path, [], 0
        parts.append(text)
        size += len(text) + 2
    flush()
    return sections


def build_document(
    path: Path,
    *,
    fmt: str,
    kind: Kind,
    title: str,
    repair: RepairReport,
    sections: list[Section] | None = None,
    segments: list[Segment] | None = None,
    created_at: datetime | None = None,
    metadata: dict[str, str] | None = None,
) -> Document:
    """The finalized document of one source file, identified by the file's content."""
    source_hash = file_sha256(path)
    return Document(
        doc_id=stable_id(fmt, source_hash),
        kind=kind,
        format=fmt,
        title=collapse_spaces(title) or readable_stem(path),
        source_path=str(path),
        source_hash=source_hash,
        created_at=created_at,
        sections=sections or [],
        segments=segments or [],
        repair=repair,
        metadata=metadata or {},
    ).finalize()
