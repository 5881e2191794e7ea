"""Obsidian notes written by the "nexus" ChatGPT/Claude importer, every generation of it.

The importer changed its layout over the years; all of these are read:

* callouts: ``>[!nexus_user] **User** - 16.06.2025 at 21:34`` then the message with each line
  quoted (``> ``), a ``<!-- UID: ... -->`` comment after it, ``[[links]]`` and ``---`` between;
* headings: ``### User, on 16.06.2025 at 21:34;`` / ``#### Assistant ...`` (quoted with ``>`` /
  ``>>``), or plain ``### User`` / ``### Assistant`` above unquoted text;
* bold labels on their own line: ``**User**`` / ``**Assistant · gpt-4o**``;
* YAML front matter (conversation_id, create_time, update_time, title or aliases) and a
  preamble of ``# Title: ...``, ``Created: ...``, ``Last Updated: ...``, ``Chat URL: ...``;
* one note per conversation holding only front matter and ``[[links]]``, beside a folder of the
  same name with one file per exchange (``01_first_words.md`` ...): note and folder are one
  conversation, parsed through the note.

Message text keeps its Markdown; only the importer's quoting, comments and links go.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import read_text_file
from memory_pipeline.records import Document, RepairReport, Turn
from memory_pipeline.sources._dialogue import build_dialogue, files_sha256, parse_timestamp
from memory_pipeline.sources.archive import ArchiveMember, as_source

FORMAT = "nexus_md"
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
_NOTE_SNIFF_BYTES = 256 * 1024

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FRONT_MATTER_LINE = re.compile(r"^([A-Za-z_][\w-]*):[ \t]*(.*?)[ \t]*$")
_CALLOUT = re.compile(r"^>[ \t]?\[!nexus_(user|agent|assistant)\][+-]?[ \t]*(.*)$")
_HEADING = re.compile(r"^#{2,4}[ \t]+(.+?)[ \t]*$")
_BOLD = re.compile(r"^(\*\*[^*]+\*\*.*?)[ \t]*$")
_LABEL = re.compile(r"^\**[ \t]*(?P<name>[^\W\d_]+)[ \t]*(?:·[ \t]*(?P<model>[^\s*,;()]+)[ \t]*)?\**(?P<tail>.*)$")
_TAIL_EDGES = " \t,;:()-–—"
_UID = re.compile(r"^[ \t]*<!--[ \t]*UID:[ \t]*(\S+?)[ \t]*-->[ \t]*$")
_LINK_LINE = re.compile(r"^[ \t]*(?:[-*+][ \t]+)?!?\[\[[^\]]+\]\](?:[ \t,]*!?\[\[[^\]]+\]\])*[ \t]*$")
_RULE = re.compile(r"^[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_TITLE_LINE = re.compile(r"^#[ \t]+(?:Title:[ \t]*)?(.+?)[ \t]*$")
_CREATED_LINE = re.compile(r"^Created:[ \t]*(.+?)[ \t]*$")
_UPDATED_LINE = re.compile(r"^Last Updated:[ \t]*(.+?)[ \t]*$")
_CHAT_URL = re.compile(r"^Chat URL:.*?/c(?:hat)?/([0-9A-Za-z-]{8,})")
_NOTE_EXTRAS = (_RULE, _TITLE_LINE, _CREATED_LINE, _UPDATED_LINE, _CHAT_URL)
_ORDINAL_STEM = re.compile(r"^\d+[ _.-]+")
_DIGITS = re.compile(r"(\d+)")

_ISO_DATE = re.compile(r"(?P<y>\d{4})[./-](?P<m>\d{1,2})[./-](?P<d>\d{1,2})")
_DOTTED_DATE = re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})")
_SLASHED_DATE = re.compile(r"(?P<a>\d{1,2})[/-](?P<b>\d{1,2})[/-](?P<y>\d{4})")
_CLOCK = re.compile(r"(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?[ \t]*(?P<ampm>[AaPp]\.?[Mm]\.?)?")

_USER_NAMES = frozenset({"user", "you", "human", "me"})
_ASSISTANT_NAMES = frozenset({"assistant", "chatgpt", "claude", "gpt", "ai"})
_ROLE_NAMES = _USER_NAMES | _ASSISTANT_NAMES
_PLACEHOLDERS = frozenset({"[No content found]", "[No text content]", "[No content]"})


@dataclass
class _Message:
    role: str
    author: str
    model: str | None
    when: str
    lines: list[str] = field(default_factory=list)
    message_id: str | None = None
    source_file: str | None = None


@dataclass
class _Note:
    """What one markdown file says: front matter, preamble facts and its messages."""

    front: dict
    title: str | None
    created: str | None
    updated: str | None
    chat_id: str | None
    messages: list[_Message]


def parse_nexus_markdown(path: Path) -> Iterator[Document]:
    """The one conversation of a nexus note (with its exchange folder, if it is a conversation note)."""
    path = as_source(path)
    files = [path, *conversation_note_members(path)]
    notes: list[_Note] = []
    report: RepairReport | None = None
    for file in files:
        text, file_report = read_text_file(file)
        notes.append(_read_note(text))
        report = file_report if report is None else report.merge(file_report)
    if len(files) > 1:  # a conversation note's exchange files: each message remembers its own
        for file, note in zip(files, notes, strict=True):
            for message in note.messages:
                message.source_file = str(file)
    messages = [m for note in notes for m in note.messages]
    if not messages:
        raise ParseError(path, "no User/Assistant messages found (not a nexus chat note)")
    try:
        document = _document(path, files, notes, messages, report or RepairReport())
    except ValueError as exc:
        raise ParseError(path, str(exc)) from exc
    yield document


def conversation_note_members(path: Path) -> list[Path]:
    """The exchange files of a conversation note (front matter and links only, beside a folder of
    the same name), in exchange order; [] for any other file."""
    if isinstance(path, ArchiveMember):
        return []
    path = Path(path)
    folder = path.with_suffix("")
    if path.suffix.lower() not in MARKDOWN_SUFFIXES or not folder.is_dir() or not _is_conversation_note(path):
        return []
    members = [f for f in folder.iterdir() if _is_exchange_file(f)]
    return sorted(members, key=_natural_key)


def claimed_by_conversation_note(path: Path) -> bool:
    """Whether a file is an exchange file parsed through its folder's conversation note."""
    path = Path(path)
    if not _is_exchange_file(path):
        return False
    folder = path.parent
    return any(
        (note := folder.with_name(folder.name + suffix)).is_file() and _is_conversation_note(note)
        for suffix in MARKDOWN_SUFFIXES
    )


def _is_exchange_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MARKDOWN_SUFFIXES and not path.name.startswith(".")


def _is_conversation_note(path: Path) -> bool:
    """Front matter and ``[[links]]`` only (a title, preamble lines and rules aside): no message."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_NOTE_SNIFF_BYTES + 1)
    except OSError:
        return False
    if len(data) > _NOTE_SNIFF_BYTES:
        return False
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    match = _FRONT_MATTER.match(text)
    links = 0
    for line in text[match.end() if match else 0 :].split("\n"):
        if _LINK_LINE.match(line):
            links += 1
        elif line.strip() and not any(p.match(line) for p in _NOTE_EXTRAS):
            return False
    return links > 0 or (match is not None and bool(_front_matter(match.group(1) or "").get("conversation_id")))


def _natural_key(path: Path) -> tuple:
    """``2_x`` before ``10_x``: exchange numbers are not always zero-padded."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(path.name))


def _document(
    path: Path, files: Sequence[Path], notes: list[_Note], messages: list[_Message], report: RepairReport
) -> Document:
    front = {k: v for note in reversed(notes) for k, v in note.front.items()}  # the note's own keys win

    def first(attr: str) -> str | None:
        return next((getattr(n, attr) for n in notes if getattr(n, attr)), None)

    day_first = _slash_day_first([m.when for m in messages] + [first("created") or "", first("updated") or ""])
    models = _front_list(front.get("models"))
    default_model = models[0] if len(models) == 1 else None
    turns = [
        Turn(
            role=m.role,
            text=text,
            author=m.author,
            model=m.model or (default_model if m.role == "assistant" else None),
            timestamp=_display_time(m.when, day_first=day_first),
            message_id=m.message_id,
            source_file=m.source_file,
        )
        for m in messages
        if (text := _message_text(m.lines)) and text not in _PLACEHOLDERS
    ]
    external_id = front.get("conversation_id") or first("chat_id")
    metadata = {k: str(front[k]) for k in ("provider", "plugin_version", "mode") if front.get(k)}
    if models:
        metadata["models"] = ", ".join(models)
    if len(files) > 1:
        metadata["exchange_files"] = str(len(files) - 1)
    return build_dialogue(
        fmt=FORMAT,
        turns=turns,
        title=_front_title(front) or first("title") or stem_title(path),
        source_path=path,
        source_hash=files_sha256(files),
        external_id=str(external_id) if external_id else None,
        repair=report,
        created_at=_front_time(front.get("create_time"), first("created"), day_first),
        updated_at=_front_time(front.get("update_time"), first("updated"), day_first),
        metadata=metadata,
    )


def _read_note(text: str) -> _Note:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    front: dict = {}
    match = _FRONT_MATTER.match(text)
    if match:
        front = _front_matter(match.group(1) or "")
        text = text[match.end() :]
    lines = text.split("\n")
    style, start = _first_header(lines)
    note = _Note(front, None, None, None, None, [])
    _read_preamble(lines[:start], note)
    if style == "callout":
        note.messages = _callout_messages(lines, start)
    elif style is not None:
        note.messages = _block_messages(lines, start, style)
    return note


def _front_matter(block: str) -> dict:
    """YAML front matter; titles with a colon break YAML, so fall back to ``key: value`` lines."""
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        return data
    pairs = (_FRONT_MATTER_LINE.match(line) for line in block.split("\n"))
    return {m.group(1): m.group(2).strip("\"'") for m in pairs if m}


def _read_preamble(lines: list[str], note: _Note) -> None:
    for line in lines:
        if (m := _TITLE_LINE.match(line)) and note.title is None:
            note.title = m.group(1)
        elif m := _CREATED_LINE.match(line):
            note.created = m.group(1)
        elif m := _UPDATED_LINE.match(line):
            note.updated = m.group(1)
        elif m := _CHAT_URL.match(line):
            note.chat_id = m.group(1)


def _header(line: str, style: str) -> _Message | None:
    """The message a header line opens in the given style, else None."""
    if style == "callout":
        m = _CALLOUT.match(line)
        if not m:
            return None
        role = "user" if m.group(1) == "user" else "assistant"
        name, model, when = _label(m.group(2), strict=False) or ("User" if role == "user" else "Assistant", None, "")
        return _Message(role, name, model, when)
    m = (_HEADING if style == "heading" else _BOLD).match(line)
    label = _label(m.group(1), strict=True) if m else None
    if label is None:
        return None
    name, model, when = label
    return _Message("user" if name.lower() in _USER_NAMES else "assistant", name, model, when)


def _label(text: str, *, strict: bool) -> tuple[str, str | None, str] | None:
    """(name, model, time text) of ``**Assistant · gpt-4o** - 16.06.2025 at 21:34`` and the like.

    ``strict`` (headings and bold lines, which messages also contain) asks for a known role
    name followed by nothing or a time: ``### User stories`` inside an answer is no header.
    """
    m = _LABEL.match(text.strip())
    if not m:
        return None
    name, model = m.group("name"), m.group("model")
    when = m.group("tail").strip(_TAIL_EDGES).removeprefix("on ").strip(_TAIL_EDGES)
    if strict:
        if name.lower() not in _ROLE_NAMES:
            return None
        if when and _display_time(when, day_first=None) is None:
            return None
    return name, model, when


def _first_header(lines: list[str]) -> tuple[str | None, int]:
    """The header style of the file (callout, heading or bold) and the line of its first header."""
    fenced = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        for style in ("callout", "heading", "bold"):
            if _header(line, style):
                return style, index
    return None, len(lines)


def _callout_messages(lines: list[str], start: int) -> list[_Message]:
    """A callout message is its header and the quoted lines right after it."""
    messages: list[_Message] = []
    index = start
    while index < len(lines):
        line = lines[index]
        index += 1
        if message := _header(line, "callout"):
            while index < len(lines) and lines[index].startswith(">") and not _CALLOUT.match(lines[index]):
                message.lines.append(lines[index][2:] if lines[index].startswith("> ") else lines[index][1:])
                index += 1
            messages.append(message)
        elif (uid := _UID.match(line)) and messages and messages[-1].message_id is None:
            messages[-1].message_id = uid.group(1)
    return messages


def _block_messages(lines: list[str], start: int, style: str) -> list[_Message]:
    """A heading or bold-label message runs to the next header of the same style outside code."""
    messages: list[_Message] = []
    fenced = False
    for line in lines[start:]:
        if _FENCE.match(line):
            fenced = not fenced
        header = None if fenced else _header(line, style)
        if header:
            messages.append(header)
        elif (uid := _UID.match(line)) and not fenced:
            if messages[-1].message_id is None:
                messages[-1].message_id = uid.group(1)
        else:
            messages[-1].lines.append(line)
    for message in messages:
        message.lines = _unquote(_trim(message.lines))
    return messages


def _trim(lines: list[str]) -> list[str]:
    """Drop the blank lines, rules and ``[[links]]`` the importer puts between messages."""

    def between(line: str) -> bool:
        return not line.strip() or bool(_RULE.match(line) or _LINK_LINE.match(line))

    start, end = 0, len(lines)
    while start < end and between(lines[start]):
        start += 1
    while end > start and between(lines[end - 1]):
        end -= 1
    return lines[start:end]


def _unquote(lines: list[str]) -> list[str]:
    """Undo the quoting of the heading generation (``> `` for the user, ``>> `` for the assistant)."""
    filled = [line for line in lines if line.strip()]
    if not filled or not all(line.startswith(">") for line in filled):
        return lines
    depth = min(len(line) - len(line.lstrip(">")) for line in filled)
    unquoted = []
    for line in lines:
        rest = line[depth:]
        unquoted.append(rest[1:] if rest.startswith(" ") else rest)
    return unquoted


def _message_text(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).strip("\n").strip()


def _slash_day_first(texts: list[str]) -> bool:
    """Whether ``03/04/2025`` dates of this file are day-first: a first number above 12 says so."""
    for text in texts:
        for m in _SLASHED_DATE.finditer(text):
            if int(m.group("a")) > 12:
                return True
            if int(m.group("b")) > 12:
                return False
    return False


def _display_time(text: str, *, day_first: bool | None) -> datetime | None:
    """A header's time as written (local, naive): ISO, ``16.06.2025 at 21:34``, ``2026/06/15 at
    08:12:21``, ``07/24/2025 at 4:28 PM``; None when there is no date."""
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for pattern in (_ISO_DATE, _DOTTED_DATE, _SLASHED_DATE):
        m = pattern.search(text)
        if m:
            break
    else:
        return None
    if pattern is _SLASHED_DATE:
        a, b = int(m.group("a")), int(m.group("b"))
        day, month = (a, b) if day_first or a > 12 else (b, a)
    else:
        day, month = int(m.group("d")), int(m.group("m"))
    hour = minute = second = 0
    if clock := _CLOCK.search(text, m.end()):
        hour, minute, second = int(clock.group("h")), int(clock.group("mi")), int(clock.group("s") or 0)
        ampm = (clock.group("ampm") or "").lower()[:1]
        if ampm == "p" and hour < 12:
            hour += 12
        elif ampm == "a" and hour == 12:
            hour = 0
    try:
        return datetime(int(m.group("y")), month, day, hour, minute, second)
    except ValueError:
        return None


def _front_time(value: object, display: str | None, day_first: bool) -> datetime | None:
    """Front matter time (ISO, YAML datetime or epoch; older versions wrote display text), else the
    preamble's ``Created:`` / ``Last Updated:``."""
    stamp = parse_timestamp(value)
    if stamp is None and isinstance(value, str):
        stamp = _display_time(value, day_first=day_first)
    if stamp is None and display:
        stamp = _display_time(display, day_first=day_first)
    return stamp


def _front_title(front: dict) -> str | None:
    for key in ("title", "aliases"):
        values = _front_list(front.get(key))
        if values:
            return values[0]
    return None


def _front_list(value: object) -> list[str]:
    if isinstance(value, str | int | float) and str(value).strip():
        return [str(value).strip()]
    if isinstance(value, list):
        return [str(v).strip() for v in value if isinstance(v, str | int | float) and str(v).strip()]
    return []


def stem_title(path: Path) -> str:
    """The note's name, which the importer took from the conversation title (without ``01_``)."""
    return _ORDINAL_STEM.sub("", path.stem).replace("_", " ").strip()
