"""PDF articles with pypdf: page-numbered sections, paragraphs rebuilt from wrapped lines.

pypdf gives one line of text per printed line; readers want paragraphs. Lines are joined
(undoing line-break hyphenation) up to a vertical gap, as pypdf's layout rendering shows it,
or else up to a line ending short of the text width; a lone short line without closing
punctuation starts a new section as its heading. Page numbers and running headers are dropped.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import repair_many
from memory_pipeline.records import Document, Kind, Section
from memory_pipeline.sources._article import (
    build_document,
    collapse_spaces,
    group_sections,
    looks_like_heading,
    normalize_newlines,
    readable_stem,
)

if TYPE_CHECKING:
    from pypdf import PageObject, PdfReader

log = logging.getLogger(__name__)

_PAGE_NUMBER = re.compile(
    r"^(?:page|стр\.?|страница|с\.)?\s*[-–—]?\s*\d{1,4}\s*[-–—]?\s*(?:(?:/|of|из)\s*\d{1,4})?$", re.I
)
_DIGITS = re.compile(r"\d+")
_JUNK_TITLE = re.compile(r"^(?:untitled|microsoft word - .*|.*\.(?:docx?|pdf|tex|indd|odt|rtf))$", re.I)
_PARAGRAPH_END = tuple('.!?:;…»"”)')
_EOF_WINDOW = 4096


def parse_pdf(path: Path) -> Iterator[Document]:
    """One article per PDF; pages that carry text become sections with their 1-based page number."""
    with _collected_pypdf_warnings() as problems:
        reader, page_objects = _open(path)
        pages = _page_texts(path, page_objects, problems)
        info = _info(reader)
    if problems:
        log.warning("%s: pypdf reported %d problem(s) reading this PDF; first: %s", path, len(problems), problems[0])
    if not any(plain.strip() for plain, _ in pages):
        raise ParseError(path, "no extractable text (scanned PDF? OCR it first)")

    plains, repair = repair_many([plain for plain, _ in pages])
    layouts, _ = repair_many([layout for _, layout in pages])
    page_lines = _strip_running_lines([_lines(plain) for plain in plains])

    sections = _sections(
        [
            (number, paragraph)
            for number, (lines, layout) in enumerate(zip(page_lines, layouts, strict=True), start=1)
            for paragraph in _paragraphs(lines, _layout_breaks(lines, layout))
        ]
    )
    title = info.get("title") or _first_line(page_lines) or readable_stem(path)
    metadata = {"pages": str(len(pages))}
    if info.get("author"):
        metadata["author"] = info["author"]
    if problems:
        metadata["parse_warnings"] = f"pypdf: {len(problems)} problem(s); first: {problems[0]}"
    yield build_document(
        path,
        fmt="pdf",
        kind=Kind.ARTICLE,
        title=title,
        repair=repair,
        sections=sections,
        created_at=info.get("created"),
        metadata=metadata,
    )


def _sections(paragraphs: list[tuple[int, str]]) -> list[Section]:
    """Sections per page; a heading holds until the next one, across page breaks."""
    sections: list[Section] = []
    heading: tuple[str, ...] = ()
    blocks: list[tuple[tuple[str, ...], str]] = []
    for index, (number, paragraph) in enumerate(paragraphs):
        last = index == len(paragraphs) - 1
        if looks_like_heading(paragraph) and not last:
            heading = (paragraph,)
        else:
            blocks.append((heading, paragraph))
        if last or paragraphs[index + 1][0] != number:
            sections.extend(group_sections(blocks, page=number))
            blocks = []
    return sections


def _open(path: Path) -> tuple[PdfReader, list[PageObject]]:
    """The pages of a readable, decrypted PDF; damage and passwords become a ParseError."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    data = path.read_bytes()
    if b"%PDF-" not in data[:1024]:
        raise ParseError(path, "corrupt PDF: no %PDF- header (not a PDF file)")
    if b"%%EOF" not in data[-_EOF_WINDOW:]:
        raise ParseError(path, "corrupt PDF: truncated (no %%EOF marker at the end of the file)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        locked = reader.is_encrypted and not reader.decrypt("")
        pages = [] if locked else list(reader.pages)
    except DependencyError as exc:
        raise ParseError(path, f"encrypted PDF needs an extra package to decrypt: {exc}") from exc
    except Exception as exc:  # pypdf raises many types (not only PyPdfError) on damaged files
        raise ParseError(path, f"corrupt PDF: {str(exc) or type(exc).__name__}") from exc
    if locked:
        raise ParseError(path, "encrypted PDF (password required)")
    return reader, pages


def _page_texts(path: Path, pages: list[PageObject], problems: list[str]) -> list[tuple[str, str]]:
    """Plain and layout text of every page; a page pypdf cannot decode is a problem, left empty.

    The layout rendering keeps vertical gaps as blank lines, which is where paragraphs break;
    the plain one keeps columns apart, so it supplies the text.
    """
    texts = []
    failed = 0
    for number, page in enumerate(pages, start=1):
        try:
            plain = page.extract_text() or ""
        except Exception as exc:  # pypdf raises many types on damaged content streams
            failed += 1
            problems.append(f"page {number}: {type(exc).__name__}: {exc}")
            texts.append(("", ""))
            continue
        try:
            layout = page.extract_text(extraction_mode="layout") if plain.strip() else ""
        except Exception:  # the layout pass only refines paragraph breaks; plain text suffices
            layout = ""
        texts.append((plain, layout))
    if pages and failed == len(pages):
        raise ParseError(path, f"corrupt PDF: no page could be read ({problems[-1]})")
    return texts


def _info(reader: PdfReader) -> dict:
    """Title, author and creation date from the document info, ignoring junk titles and bad dates."""
    info: dict = {}
    try:
        meta = reader.metadata
    except Exception:  # a damaged info dictionary must not lose the text
        return info
    if meta is None:
        return info
    title = collapse_spaces(str(meta.title or ""))
    if title and not _JUNK_TITLE.match(title):
        info["title"] = title
    author = collapse_spaces(str(meta.author or ""))
    if author:
        info["author"] = author
    try:
        created = meta.creation_date
    except Exception:  # malformed /CreationDate strings are common
        created = None
    if isinstance(created, datetime):
        info["created"] = created
    return info


@contextmanager
def _collected_pypdf_warnings():
    """Collect pypdf's log records and warnings instead of letting each one through."""
    problems: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            problems.append(record.getMessage())

    logger = logging.getLogger("pypdf")
    handler = _Collect(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield problems
        problems.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _lines(text: str) -> list[str]:
    return [collapse_spaces(line) for line in normalize_newlines(text).split("\n")]


def _strip_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Drop page numbers, and running headers/footers repeated on most pages of a longer PDF."""

    def edges(lines: list[str]) -> list[str]:
        content = [line for line in lines if line]
        return content[:1] + content[-1:]

    running: set[str] = set()
    if len(pages) >= 3:
        counts = Counter(key for lines in pages for key in {_DIGITS.sub("#", e) for e in edges(lines)})
        running = {key for key, n in counts.items() if n >= 0.6 * len(pages)}

    cleaned = []
    for lines in pages:
        content = [line for line in lines if line]
        edge = set(content[:2] + content[-2:])
        cleaned.append(
            [
                line
                for line in lines
                if not (line in edge and (_PAGE_NUMBER.match(line) or _DIGITS.sub("#", line) in running))
            ]
        )
    return cleaned


def _layout_breaks(lines: list[str], layout: str) -> tuple[set[str], set[str]] | None:
    """Lines that open and close paragraphs in the layout rendering, when it matches the plain text.

    Multi-column pages render side by side in layout mode, so its lines stop matching the plain
    ones; then there is no layout evidence and the width rule decides alone.
    """
    layout_lines = _lines(layout)
    known = set(layout_lines)
    content = [line for line in lines if line]
    if not content or sum(line in known for line in content) < 0.8 * len(content):
        return None
    starts, ends = set(), set()
    for index, line in enumerate(layout_lines):
        if not line:
            continue
        if index == 0 or not layout_lines[index - 1]:
            starts.add(line)
        if index == len(layout_lines) - 1 or not layout_lines[index + 1]:
            ends.add(line)
    return starts, ends


def _paragraphs(lines: list[str], breaks: tuple[set[str], set[str]] | None) -> list[str]:
    """Join wrapped lines into paragraphs.

    A paragraph ends at a blank line, at a vertical gap seen in the layout rendering, or
    (without layout evidence) at a line ending short of the page's text width.
    """
    width = max((len(line) for line in lines), default=0)
    paragraphs: list[str] = []
    current = ""
    for line in lines:
        if current and (not line or (breaks and line in breaks[0])):
            paragraphs.append(current)
            current = ""
        if not line:
            continue
        current = _join(current, line) if current else line
        lone_heading = current == line and looks_like_heading(line) and len(line) < 0.7 * width
        if breaks:
            ends = line in breaks[1]
        else:
            ends = len(line) < 0.75 * width or (line.endswith(_PARAGRAPH_END) and len(line) < 0.9 * width)
        if lone_heading or ends:
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return paragraphs


def _join(text: str, line: str) -> str:
    """Append a wrapped line, undoing a line-break hyphen when the word continues in lower case."""
    if text.endswith("\u00ad"):
        return text[:-1] + line
    if text.endswith("-") and len(text) > 1 and text[-2].isalpha():
        return (text[:-1] if line[:1].islower() else text) + line
    return f"{text} {line}"


def _first_line(pages: list[list[str]]) -> str | None:
    for lines in pages:
        for line in lines:
            if line:
                return line[:200]
    return None
