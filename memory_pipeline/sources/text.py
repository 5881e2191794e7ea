"""Plain-text articles: blank-line paragraphs, grouped under lone short lines that read as headings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import read_text_file
from memory_pipeline.records import Document, Kind
from memory_pipeline.sources._article import (
    SHORT_LINE_CHARS,
    build_document,
    group_sections,
    looks_like_heading,
    readable_stem,
    split_paragraphs,
)


def parse_plain_text(path: Path) -> Iterator[Document]:
    """One article per text file; its first line is the title when short enough to be one."""
    text, repair = read_text_file(path)
    if not text.strip():
        raise ParseError(path, "only whitespace: no text to store")
    title, blocks = text_blocks(split_paragraphs(text))
    yield build_document(
        path,
        fmt="text",
        kind=Kind.ARTICLE,
        title=title or readable_stem(path),
        repair=repair,
        sections=group_sections(blocks),
    )


def text_blocks(paragraphs: list[str]) -> tuple[str | None, list[tuple[tuple[str, ...], str]]]:
    """The title (first line, if short) and the paragraphs with the heading each falls under.

    A title standing alone as the first paragraph is not repeated in the body; a lone short
    line further down opens a section, unless it is the very last paragraph.
    """
    if not paragraphs:
        return None, []
    first_line = paragraphs[0].split("\n", 1)[0].strip()
    title = first_line if len(first_line) <= SHORT_LINE_CHARS else None
    if title and paragraphs[0].strip() == title and len(paragraphs) > 1:
        paragraphs = paragraphs[1:]
    blocks = []
    heading: tuple[str, ...] = ()
    for index, paragraph in enumerate(paragraphs):
        if looks_like_heading(paragraph) and index < len(paragraphs) - 1:
            heading = (paragraph.strip(),)
        else:
            blocks.append((heading, paragraph))
    return title, blocks
