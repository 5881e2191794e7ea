"""Markdown articles: headings become each section's heading path; front matter gives title and date.

A line scanner rather than a full Markdown renderer: the text is kept as written (links, lists,
code) because that is what gets embedded; only the structure is read, and fenced code is
skipped so a ``# comment`` inside a code block never becomes a heading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import yaml

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import read_text_file
from memory_pipeline.records import Document, Kind
from memory_pipeline.sources._article import (
    build_document,
    collapse_spaces,
    group_sections,
    normalize_newlines,
    readable_stem,
)

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_METADATA_KEYS = ("author", "source", "url", "tags", "aliases")


def parse_markdown(path: Path) -> Iterator[Document]:
    """One article per Markdown file, sections cut at every heading."""
    text, repair = read_text_file(path)
    if not text.strip():
        raise ParseError(path, "only whitespace: no text to store")
    front, body = split_front_matter(normalize_newlines(text))
    blocks, first_h1 = markdown_blocks(body)
    title = _scalar(front.get("title")) or first_h1 or readable_stem(path)
    metadata = {key: _scalar(front[key]) for key in _METADATA_KEYS if _scalar(front.get(key))}
    yield build_document(
        path,
        fmt="markdown",
        kind=Kind.ARTICLE,
        title=title,
        repair=repair,
        sections=group_sections(blocks),
        created_at=_date(front.get("created", front.get("date"))),
        metadata=metadata,
    )


def split_front_matter(text: str) -> tuple[dict, str]:
    """YAML front matter (between ``---`` lines at the very top) and the rest of the text.

    Front matter that is not a YAML mapping is dropped from the body all the same: it is
    metadata, not prose.
    """
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1) or "")
    except yaml.YAMLError:
        data = None
    return (data if isinstance(data, dict) else {}), text[match.end() :]


def markdown_blocks(text: str) -> tuple[list[tuple[tuple[str, ...], str]], str | None]:
    """Paragraphs with their heading path (outermost first), and the first H1's text."""
    blocks: list[tuple[tuple[str, ...], str]] = []
    headings: list[tuple[int, str]] = []
    first_h1: str | None = None
    paragraph: list[str] = []
    fence: str | None = None

    def path() -> tuple[str, ...]:
        return tuple(heading for _, heading in headings)

    def flush() -> None:
        if any(line.strip() for line in paragraph):
            blocks.append((path(), "\n".join(paragraph).strip("\n")))
        paragraph.clear()

    def open_heading(level: int, heading: str) -> None:
        nonlocal first_h1
        flush()
        headings[:] = [h for h in headings if h[0] < level] + [(level, heading)]
        if level == 1 and first_h1 is None:
            first_h1 = heading

    for line in text.split("\n"):
        line = line.rstrip()
        fence_match = _FENCE.match(line)
        if fence is not None:
            paragraph.append(line)
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                fence = None
            continue
        if fence_match:
            fence = fence_match.group(1)
            paragraph.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            heading = collapse_spaces(atx.group(2) or "")
            if heading:
                open_heading(len(atx.group(1)), heading)
            else:
                flush()
            continue
        setext = _SETEXT.match(line)
        if (
            setext
            and len(paragraph) == 1
            and paragraph[0].strip()
            and not paragraph[0].lstrip().startswith(("-", "*", ">"))
        ):
            heading = collapse_spaces(paragraph.pop())
            open_heading(1 if setext.group(1)[0] == "=" else 2, heading)
            continue
        if not line.strip():
            flush()
            continue
        paragraph.append(line)
    flush()
    return blocks, first_h1


def _scalar(value: object) -> str:
    """A front-matter value as one line of text (lists joined with commas)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value if v is not None)
    return collapse_spaces(str(value))


def _date(value: object) -> datetime | None:
    """``created`` / ``date`` from front matter: YAML dates, datetimes, or ISO strings."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    return None
