"""Helpers the dialogue parsers share: streaming JSON, timestamps, turn merging, document identity.

Every chat format ends the same way: user/assistant turns in the order the user saw them,
consecutive messages of one side merged (a reply split over several messages is one turn),
text repaired under one decision per conversation, and an id that follows the export's own
conversation id, so a re-export with more turns updates the same document.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.limits import JsonNestingGauge, NestingTooDeep, current_limits
from memory_pipeline.ingest.text_repair import repair_many
from memory_pipeline.records import Document, Kind, RepairReport, Turn, stable_id
from memory_pipeline.sources.archive import ArchiveMember

log = logging.getLogger(__name__)

TITLE_WORDS = 8
TITLE_CHARS = 80
_EPOCH_MS = 1e11  # epoch values above this are milliseconds (1e11 s is the year 5138)
_WHITESPACE = re.compile(r"\s+")
_MARKUP = re.compile(r"[#*_`>\[\]|]+")
_JSON_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_JSON_ERROR = re.compile(r"(?:lexical|parse) error: [^\n\\.]+")
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


class NestingLimitedReader:
    """A binary file that raises ParseError naming the file once the JSON read through it nests past a limit."""

    def __init__(self, handle: BinaryIO, path: Path, limit: int):
        self.handle, self.path = handle, path
        self.gauge = JsonNestingGauge(limit)

    def read(self, size: int = -1) -> bytes:
        block = self.handle.read(size)
        try:
            self.gauge.feed(block)
        except NestingTooDeep as exc:
            raise ParseError(self.path, str(exc)) from None
        return block


def _ijson_backend():
    """ijson's C backend (yajl2_c) parses several times faster than pure Python; use it when built."""
    try:
        return ijson.get_backend("yajl2_c")
    except ImportError:
        return ijson


_IJSON = _ijson_backend()


def files_sha256(paths: Sequence[Path]) -> str:
    """sha256 of the files' bytes in order (for one file: plain sha256 of its bytes)."""
    if len(paths) == 1 and isinstance(paths[0], ArchiveMember):
        return paths[0].content_hash()
    digest = hashlib.sha256()
    for position, path in enumerate(paths):
        if position:
            digest.update(b"\x00")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def iter_json_items(path: Path) -> Iterator[tuple[int, Any]]:
    """Stream the elements of a top-level JSON array (or one top-level object as element 0).

    Memory stays bounded by one element, whatever the file size: exports of heavy users run to
    hundreds of MB. Syntax errors, including a file cut short, raise ParseError naming the file.
    """
    with path.open("rb") as handle:
        offset, first = _first_json_byte(handle)
        if first is None:
            raise ParseError(path, "empty file")
        if first not in (b"[", b"{"):
            raise ParseError(path, f"not a JSON array or object (starts with {first!r})")
        handle.seek(offset)
        prefix = "item" if first == b"[" else ""
        reader = NestingLimitedReader(handle, path, current_limits().max_nesting_depth)
        try:
            yield from enumerate(_IJSON.items(reader, prefix, use_float=True))
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            found = _JSON_ERROR.search(str(exc))
            detail = found.group() if found else type(exc).__name__
            if "premature EOF" in detail:
                raise ParseError(path, "truncated JSON: the file ends inside a value") from exc
            raise ParseError(path, f"invalid JSON: {detail}") from exc


def _first_json_byte(handle: BinaryIO) -> tuple[int, bytes | None]:
    """Where the JSON starts (after a UTF-8 BOM) and its first non-blank byte, None if blank."""
    start = len(_UTF8_BOM) if handle.read(len(_UTF8_BOM)) == _UTF8_BOM else 0
    handle.seek(start)
    while block := handle.read(1 << 16):
        stripped = block.lstrip(_JSON_WHITESPACE)
        if stripped:
            return start, stripped[:1]
    return start, None


def parse_timestamp(value: object) -> datetime | None:
    """Epoch seconds or milliseconds (as UTC), ISO 8601 text, or a YAML date/datetime; else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, int | float):
        seconds = value / 1000 if value > _EPOCH_MS else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return parse_timestamp(float(text))
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


def merge_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Join consecutive turns of one role: the first keeps its id and time, text is concatenated."""
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            last = merged[-1]
            merged[-1] = last.model_copy(
                update={"text": f"{last.text}\n\n{turn.text}", "model": last.model or turn.model}
            )
        else:
            merged.append(turn)
    return merged


def title_from_turns(turns: Sequence[Turn]) -> str:
    """The first words of the first user turn (or first turn): what the conversation was about."""
    first = next((t for t in turns if t.role == "user"), turns[0] if turns else None)
    if first is None:
        return ""
    words = _WHITESPACE.sub(" ", _MARKUP.sub(" ", first.text)).strip().split(" ")
    title = " ".join(words[:TITLE_WORDS])
    if len(title) > TITLE_CHARS:
        title = title[:TITLE_CHARS].rsplit(" ", 1)[0]
    return title


def repair_conversation(title: str, turns: Sequence[Turn]) -> tuple[str, list[Turn], RepairReport]:
    """Repair a conversation's title and messages under one mojibake decision."""
    texts, report = repair_many([title, *(t.text for t in turns)])
    repaired = [t.model_copy(update={"text": text}) for t, text in zip(turns, texts[1:], strict=True)]
    return texts[0], repaired, report


def build_dialogue(
    *,
    fmt: str,
    turns: Sequence[Turn],
    title: str,
    source_path: Path,
    source_hash: str,
    external_id: str | None,
    repair: RepairReport,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    metadata: dict[str, str] | None = None,
    place: str | None = None,
) -> Document:
    """The finalized dialogue document; ValueError when no user or assistant text is left.

    Identity is the export's conversation id; without one, the file's bytes (and ``place``, where
    in the file the conversation sits, when one file holds several without ids).
    """
    kept = merge_turns(t.model_copy(update={"text": t.text.strip()}) for t in turns if t.text.strip())
    if not kept:
        raise ValueError("no user or assistant messages with text")
    stamps = [t.timestamp for t in kept if t.timestamp is not None]
    return Document(
        doc_id=stable_id(fmt, external_id) if external_id else stable_id(fmt, source_hash, *([place] if place else [])),
        kind=Kind.DIALOGUE,
        format=fmt,
        title=_WHITESPACE.sub(" ", title).strip() or title_from_turns(kept) or "untitled conversation",
        source_path=str(source_path),
        source_hash=source_hash,
        external_id=external_id,
        created_at=created_at or (stamps[0] if stamps else None),
        updated_at=updated_at or (stamps[-1] if stamps else None),
        turns=kept,
        repair=repair,
        metadata=metadata or {},
    ).finalize()


def text_of_parts(parts: object) -> str:
    """Text of a message's content: a string, or the string / ``{type: text, text}`` parts of a list."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif _part_type(part) in _TEXT_PART_TYPES and isinstance(as_dict(part).get("text"), str):
            texts.append(part["text"])
    return "\n\n".join(t for t in texts if t.strip())


def _part_type(part: object) -> str | None:
    """A content part's type; a part without one is text. Not a string (a list, say): no type we read."""
    kind = as_dict(part).get("type", "text")
    return kind if isinstance(kind, str) else None


Converter = Callable[[dict, Path, str], Document | list[Document]]


def documents_from_json(path: Path, *, convert: Converter) -> Iterator[Document]:
    """The documents of a JSON export, one per conversation (and the articles attached to it), streamed.

    One conversation of an odd shape is skipped with a warning naming the file and the
    conversation, so a years-long export is not lost to one bad entry; a file from which nothing
    at all can be read raises ParseError. Exports are not ours, so any shape error of one
    conversation (ValueError, TypeError, AttributeError, KeyError) counts as "this one is broken".
    """
    try:
        source_hash = files_sha256([path])
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    produced = skipped = 0
    first_problem = ""
    for index, item in iter_json_items(path):
        label = conversation_label(item, index)
        try:
            if not isinstance(item, dict):
                raise ValueError(f"expected a conversation object, got a JSON {type(item).__name__}")
            converted = convert(item, path, source_hash)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            skipped += 1
            first_problem = first_problem or f"conversation {label}: {exc}"
            log.warning("%s: skipped conversation %s: %s", path, label, exc)
            continue
        produced += 1
        yield from converted if isinstance(converted, list) else [converted]
    if not produced:
        if skipped:
            raise ParseError(path, f"no readable conversation ({skipped} skipped; first: {first_problem})")
        raise ParseError(path, "no conversations")


def conversation_label(item: object, index: int) -> str:
    """How a warning names a conversation: its own id where it has one, else its position."""
    if isinstance(item, dict):
        for key in ("conversation_id", "id", "uuid"):
            if isinstance(item.get(key), str) and item[key]:
                return item[key]
    return f"#{index}"


def as_dict(value: object) -> dict:
    """The value if it is a JSON object, else an empty one: optional fields may hold anything."""
    return value if isinstance(value, dict) else {}
