"""Plain-text lecture transcripts, with or without ``[hh:mm:ss]`` / ``[mm:ss]`` marks.

A mark at the start of a line opens a segment that lasts until the next mark; ``Name:``
prefixes name the speaker (as in subtitles). Without marks, each paragraph is a segment with
no times: the text is still searchable, it just cannot point into the recording.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import read_text_file
from memory_pipeline.records import Document, Kind, Segment
from memory_pipeline.sources._article import (
    build_document,
    collapse_spaces,
    normalize_newlines,
    readable_stem,
    split_paragraphs,
)
from memory_pipeline.sources.subtitles import Cue, cue_pieces

_MARK = re.compile(r"^\s*[\[(](\d{1,2}):(\d{2})(?::(\d{2}))?(?:[.,](\d{1,3}))?[\])]\s*")
_BARE_MARK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?(?:[.,](\d{1,3}))?\s*$")
_TITLE = re.compile(r"^\s*(?:#\s+|(?:title|название|тема)\s*:\s*)(.+)$", re.I)


def parse_transcript(path: Path) -> Iterator[Document]:
    """One lecture per transcript file."""
    text, repair = read_text_file(path)
    title, body = split_title(normalize_newlines(text))
    segments = transcript_segments(body)
    if not segments:
        raise ParseError(path, "no transcript text")
    yield build_document(
        path,
        fmt="transcript",
        kind=Kind.LECTURE,
        title=title or readable_stem(path),
        repair=repair,
        segments=segments,
    )


def split_title(text: str) -> tuple[str | None, str]:
    """A first line ``Title: ...`` / ``Название: ...`` / ``# ...`` is the title, not speech."""
    first, _, rest = text.lstrip("\n").partition("\n")
    match = _TITLE.match(first)
    if match and collapse_spaces(match.group(1)):
        return collapse_spaces(match.group(1)), rest
    return None, text


def transcript_segments(text: str) -> list[Segment]:
    """Segments from time marks when the text has them (end = the next mark), else one per paragraph."""
    lines = text.split("\n")
    marks = [_mark_seconds(line) for line in lines]
    if all(seconds is None for seconds in marks):
        cues = [Cue(None, None, tuple(p.split("\n"))) for p in split_paragraphs(text)]
    else:
        blocks: list[tuple[float | None, list[str]]] = [(None, [])]
        for seconds, line in zip(marks, lines, strict=True):
            if seconds is not None:
                blocks.append((seconds, []))
                line = _MARK.sub("", line, count=1) if _MARK.match(line) else ""
            if line.strip():
                blocks[-1][1].append(line.strip())
        cues = [
            Cue(start, blocks[index + 1][0] if start is not None and index + 1 < len(blocks) else None, tuple(body))
            for index, (start, body) in enumerate(blocks)
            if body
        ]
    return [
        Segment(start=piece.start, end=piece.end, speaker=piece.speaker, text=piece.text)
        for piece in cue_pieces(cues, rolling=False)
    ]


def _mark_seconds(line: str) -> float | None:
    match = _MARK.match(line) or _BARE_MARK.match(line)
    if not match:
        return None
    first, second, third, fraction = match.groups()
    hours, minutes, seconds = (int(first), int(second), int(third)) if third else (0, int(first), int(second))
    return hours * 3600 + minutes * 60 + seconds + (int(fraction.ljust(3, "0")) / 1000 if fraction else 0.0)
