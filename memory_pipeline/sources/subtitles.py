"""SRT and WebVTT lectures: cues merged into timed speaker turns.

Subtitle cues are a few seconds long and often cut mid-sentence; search wants stretches a
person would quote. Consecutive cues of one speaker are merged while the gap stays short and
the turn stays under a minute, so a hit still points at a moment in the recording. Rolling
auto-captions (each cue repeating the previous cue's last line) are reduced to one copy.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import read_text_file
from memory_pipeline.records import Document, Kind, RepairReport, Segment
from memory_pipeline.sources._article import build_document, collapse_spaces, readable_stem

MAX_GAP_SECONDS = 3.0
MAX_SEGMENT_SECONDS = 60.0
# Repeats shorter than this are taken as real speech ("Да." answered with "Да."), not rolling captions.
MIN_REPEAT_CHARS = 12

_VOICE = re.compile(r"<v(?:\.[\w-]+)*[ \t]+([^>]+)>", re.I)
_TAG = re.compile(r"<[^<>\n]*>")
_ASS_TAG = re.compile(r"\{\\[^{}]*\}")
_ANNOTATION = re.compile(r"^(?:\[[^\]]*\]|\([^)]*\)|[♪♫].*|.*[♪♫])$")
_ARROWS = re.compile(r"^>>+\s*")
_DASH = re.compile(r"^[-–—]\s+")
_NAME = r"[A-ZА-ЯЁ][\w'’.-]*(?: [A-ZА-ЯЁ][\w'’.-]*){0,2}"
_BRACKET_SPEAKER = re.compile(rf"^\[({_NAME})\]\s*(?=\S)")
_COLON_SPEAKER = re.compile(rf"^({_NAME}):\s+(?=\S)")


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: its time span in seconds and its raw lines (tags included)."""

    start: float | None
    end: float | None
    lines: tuple[str, ...]


@dataclass
class _Piece:
    start: float | None
    end: float | None
    speaker: str | None
    text: str
    new_turn: bool


def parse_srt(path: Path) -> Iterator[Document]:
    """One lecture per SubRip file."""
    import srt

    text, repair = read_text_file(path)
    try:
        subtitles = list(srt.parse(text))
    except srt.SRTParseError as exc:
        line = text.count("\n", 0, exc.expected_start) + 1
        raise ParseError(
            path, f"malformed SRT near line {line}: {_shorten(exc.unmatched_content)!r} is not a cue"
        ) from exc
    except srt.TimestampParseError as exc:
        raise ParseError(path, f"malformed SRT: {exc}") from exc
    except OverflowError as exc:  # a timestamp of 10**16 seconds: no timedelta holds it
        raise ParseError(path, f"malformed SRT: a timestamp out of range ({exc})") from exc
    cues = [
        Cue(s.start.total_seconds(), s.end.total_seconds(), tuple(s.content.split("\n")))
        for s in subtitles
        if s.content.strip()
    ]
    yield _lecture(path, "srt", cues, repair, title=None)


def parse_vtt(path: Path) -> Iterator[Document]:
    """One lecture per WebVTT file; the text after ``WEBVTT`` on the first line is its title."""
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    text, repair = read_text_file(path)
    try:
        vtt = webvtt.WebVTT.from_string(text, strict=True)
    except (MalformedFileError, MalformedCaptionError, ValueError) as exc:
        raise ParseError(path, f"malformed WebVTT: {_shorten(str(exc))}") from exc
    cues = [
        Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, tuple(c.lines))
        for c in vtt.captions
        if c.raw_text.strip()
    ]
    header = collapse_spaces(vtt.header_text).lstrip("-–—: ").strip()
    yield _lecture(path, "vtt", cues, repair, title=header or None)


def _lecture(path: Path, fmt: str, cues: list[Cue], repair: RepairReport, *, title: str | None) -> Document:
    if not cues:
        raise ParseError(path, "no subtitle cues")
    segments = merge_pieces(cue_pieces(sorted(cues, key=lambda c: c.start or 0.0)))
    if not segments:
        raise ParseError(path, "no subtitle cues with text (only sound annotations or markup)")
    return build_document(
        path,
        fmt=fmt,
        kind=Kind.LECTURE,
        title=title or readable_stem(path),
        repair=repair,
        segments=segments,
    )


def clean_line(line: str) -> tuple[str | None, str]:
    """The ``<v Name>`` voice of a cue line (if any) and its text without tags and entities."""
    voice = _VOICE.search(line)
    text = _ASS_TAG.sub("", _TAG.sub("", line))
    return (collapse_spaces(voice.group(1)) if voice else None), collapse_spaces(html.unescape(text))


def drop_rolling_repeats(cues: Iterable[list[str]]) -> list[list[str]]:
    """Remove the lines each cue repeats from the end of the cue before it.

    YouTube's auto-captions show two lines at a time: every cue starts with the previous cue's
    last line (sometimes still growing word by word), and short 10 ms cues repeat a cue whole.
    """
    kept_cues = []
    previous: list[str] = []
    for lines in cues:
        overlap = 0
        for k in range(min(len(previous), len(lines)), 0, -1):
            if previous[-k:] == lines[:k] and sum(len(line) for line in lines[:k]) >= MIN_REPEAT_CHARS:
                overlap = k
                break
        kept = lines[overlap:]
        if kept and previous and len(previous[-1]) >= MIN_REPEAT_CHARS and kept[0].startswith(previous[-1] + " "):
            kept = [kept[0][len(previous[-1]) + 1 :], *kept[1:]]
        kept_cues.append(kept)
        if lines:
            previous = lines
    return kept_cues


def speaker_names(lines: Iterable[str]) -> set[str]:
    """Names accepted as ``Name:`` / ``[Name]`` speaker prefixes in this file.

    A name after ``>>``, written in capitals, or recurring counts at once; a capitalised
    prefix seen once counts only in a file that already names speakers this way, so that a
    lone "Note: ..." or "[Laughter] ..." in plain captions is not taken for a speaker.
    """
    counts: Counter[str] = Counter()
    accepted: set[str] = set()
    for line in lines:
        arrows = _ARROWS.match(line)
        rest = _DASH.sub("", line[arrows.end() :] if arrows else line)
        match = _COLON_SPEAKER.match(rest) or _BRACKET_SPEAKER.match(rest)
        if not match:
            continue
        name = match.group(1)
        counts[name] += 1
        if arrows or (name.upper() == name and any(ch.isalpha() for ch in name)):
            accepted.add(name)
    accepted |= {name for name, n in counts.items() if n >= 2}
    return set(counts) if accepted else set()


def split_speaker(line: str, names: set[str]) -> tuple[str | None, bool, str]:
    """(speaker named on the line, whether a dash or ``>>`` marks a new turn, the text after the marks)."""
    marked = False
    for mark in (_ARROWS, _DASH):
        match = mark.match(line)
        if match:
            marked, line = True, line[match.end() :]
    match = _COLON_SPEAKER.match(line) or _BRACKET_SPEAKER.match(line)
    if match and match.group(1) in names:
        return match.group(1), marked, line[match.end() :].strip()
    return None, marked, line.strip()


def cue_pieces(cues: list[Cue], *, rolling: bool = True) -> list[_Piece]:
    """Cue text split where the speaker changes, sound annotations removed, and with ``rolling``
    the lines each cue repeats from the one before (auto-captions) dropped."""
    cleaned = [[(voice, text) for voice, text in map(clean_line, cue.lines) if text] for cue in cues]
    texts = [[text for _, text in lines] for lines in cleaned]
    kept_texts = drop_rolling_repeats(texts) if rolling else texts
    names = speaker_names(text for lines in kept_texts for text in lines)
    speaker: str | None = None
    pending_turn = False
    pieces: list[_Piece] = []
    for cue, lines, kept in zip(cues, cleaned, kept_texts, strict=True):
        voices = [voice for voice, _ in lines][len(lines) - len(kept) :]
        parts: list[_Piece] = []
        for line_voice, line in zip(voices, kept, strict=True):
            named, marked, text = split_speaker(line, names)
            voice = line_voice or named
            if marked or (voice is not None and voice != speaker):
                speaker, pending_turn = voice, True
            if not text or _ANNOTATION.match(text):
                continue
            if parts and not pending_turn:
                parts[-1].text = f"{parts[-1].text} {text}"
            else:
                parts.append(_Piece(cue.start, cue.end, speaker, text, pending_turn))
                pending_turn = False
        pieces.extend(_spread(parts, cue.start, cue.end))
    return pieces


def merge_pieces(
    pieces: list[_Piece], *, max_gap: float = MAX_GAP_SECONDS, max_span: float = MAX_SEGMENT_SECONDS
) -> list[Segment]:
    """Consecutive pieces of one speaker become one segment while gaps and total length stay small."""
    segments: list[Segment] = []
    for piece in pieces:
        last = segments[-1] if segments else None
        if (
            last is not None
            and not piece.new_turn
            and piece.speaker == last.speaker
            and None not in (piece.start, piece.end, last.start, last.end)
            and piece.start - last.end < max_gap
            and piece.end - last.start <= max_span
        ):
            last.text = f"{last.text} {piece.text}"
            last.end = max(last.end, piece.end)
        else:
            segments.append(Segment(start=piece.start, end=piece.end, speaker=piece.speaker, text=piece.text))
    return segments


def _spread(parts: list[_Piece], start: float | None, end: float | None) -> list[_Piece]:
    """Share a cue's time span among its speaker parts in proportion to their text length."""
    if len(parts) < 2 or start is None or end is None:
        return parts
    total = sum(len(p.text) for p in parts)
    at = start
    for part in parts:
        part.start = round(at, 3)
        at += (end - start) * len(part.text) / total
        part.end = round(at, 3)
    parts[-1].end = end
    return parts


def _shorten(text: str, limit: int = 120) -> str:
    text = collapse_spaces(text.replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"
