"""Generic chat JSON Lines: one message per line, or one whole conversation per line.

A message line is ``{"role", "content", "conversation_id"?, "turn_index"?, "timestamp"?,
"model"?, "title"?}``; a conversation line is ``{"messages": [...], "conversation_id"?,
"title"?, "model"?, "created_at"?}``. Messages group by conversation id; message lines without
one form one conversation per file, and a conversation line without one stands alone (the
shape of fine-tuning sets). This is also the memory service's durable inbox, appended to
while it runs: a turn written twice (same conversation and turn index) counts once, and a line
left half-written by a crash is skipped with a warning rather than failing the file.

Text is repaired per conversation after JSON decoding, as for the JSON exports: written with
``\\u`` escapes (Python's default), a double-encoded message is invisible in the raw file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from memory_pipeline.errors import NothingToStoreError, ParseError
from memory_pipeline.ingest.text_repair import decode_bytes
from memory_pipeline.records import Document, Turn
from memory_pipeline.sources._dialogue import (
    build_dialogue,
    files_sha256,
    parse_timestamp,
    repair_conversation,
    text_of_parts,
)
from memory_pipeline.sources.archive import as_source

log = logging.getLogger(__name__)

FORMAT = "chat_jsonl"
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "model": "assistant"}
# A file whose first lines are all not JSON is not JSON Lines: stop before a warning per line.
_MAX_LEADING_BAD_LINES = 20


@dataclass
class _Conversation:
    """The messages of one conversation in file order, each under its turn index when it has one."""

    external_id: str | None
    title: str = ""
    model: str | None = None
    created_at: object = None
    turns: list[tuple[int | None, Turn]] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def add(self, turn: Turn | None, turn_index: int | None) -> None:
        """Record a message once per turn index (a dropped system message still claims its index)."""
        if turn_index is not None:
            if turn_index in self.seen:
                return
            self.seen.add(turn_index)
        if turn is not None:
            self.turns.append((turn_index, turn))

    def ordered(self) -> list[Turn]:
        """By turn index when every message has one (appends may arrive out of order), else as written."""
        if all(index is not None for index, _ in self.turns):
            return [turn for _, turn in sorted(self.turns, key=lambda item: item[0])]
        return [turn for _, turn in self.turns]


def parse_chat_jsonl(path: Path) -> Iterator[Document]:
    """One dialogue per conversation found in a JSONL file."""
    path = as_source(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    text, encoding = decode_bytes(data, path)
    del data
    conversations = _conversations(path, text)
    if not conversations:
        raise ParseError(path, "no line holds a chat message (role, content) or conversation (messages)")
    source_hash = files_sha256([path])
    produced = 0
    for key, conversation in conversations.items():
        title, turns, report = repair_conversation(conversation.title, conversation.ordered())
        try:
            document = build_dialogue(
                fmt=FORMAT,
                turns=turns,
                title=title,
                source_path=path,
                source_hash=source_hash,
                external_id=conversation.external_id,
                repair=report.model_copy(update={"source_encoding": encoding}),
                created_at=parse_timestamp(conversation.created_at),
                place=key if conversation.external_id is None else None,
            )
        except ValueError as exc:
            log.warning("%s: skipped conversation %s: %s", path, key or "(no id)", exc)
            continue
        produced += 1
        yield document
    if not produced:
        raise NothingToStoreError(path, "no user or assistant message with text")


def _conversations(path: Path, text: str) -> dict[str, _Conversation]:
    """Conversations by key, in order of first appearance: the conversation id, ``""`` for
    message lines without one, ``line N`` for a conversation line without one."""
    conversations: dict[str, _Conversation] = {}
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    bad = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _row(path, line, number, last=number - 1 == last)
        if row is None:
            bad += 1
            if bad >= _MAX_LEADING_BAD_LINES and not conversations:
                raise ParseError(path, f"not JSON Lines: the first {bad} lines are not chat JSON objects")
            continue
        cid = str(row["conversation_id"]) if row.get("conversation_id") not in (None, "") else None
        if isinstance(row.get("messages"), list):
            conversation = _conversation(conversations, cid if cid else f"line {number}", cid, row)
            for position, message in enumerate(row["messages"]):
                message = message if isinstance(message, dict) else {}
                conversation.add(_turn(message, conversation.model), _index(message.get("turn_index"), position))
        else:
            conversation = _conversation(conversations, cid or "", cid, row)
            conversation.add(_turn(row, None), _index(row.get("turn_index"), None))
    return conversations


def _row(path: Path, line: str, number: int, *, last: bool) -> dict | None:
    """The JSON object of a line if it is a message or a conversation; else None, with a warning."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        log.warning("%s:%d: skipped %s: %s", path, number, "truncated last line" if last else "invalid JSON", exc.msg)
        return None
    except RecursionError:
        log.warning("%s:%d: skipped line: JSON nested too deep to read", path, number)
        return None
    if not isinstance(row, dict) or not (isinstance(row.get("messages"), list) or "role" in row):
        log.warning("%s:%d: skipped line: not a message (role, content) nor a conversation (messages)", path, number)
        return None
    return row


def _conversation(conversations: dict[str, _Conversation], key: str, cid: str | None, row: dict) -> _Conversation:
    conversation = conversations.setdefault(key, _Conversation(cid))
    if not conversation.title and isinstance(row.get("title"), str):
        conversation.title = row["title"]
    if conversation.model is None and "messages" in row and isinstance(row.get("model"), str):
        conversation.model = row["model"]
    if conversation.created_at is None:
        conversation.created_at = row.get("created_at")
    return conversation


def _index(value: object, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _turn(message: dict, default_model: object) -> Turn | None:
    """A user or assistant message with text, else None (system, tool, developer, empty)."""
    role = _ROLES.get(str(message.get("role", "")).lower())
    text = text_of_parts(message.get("content"))
    if role is None or not text.strip():
        return None
    model = message.get("model") or (default_model if role == "assistant" else None)
    return Turn(
        role=role,
        text=text,
        author=message["name"] if isinstance(message.get("name"), str) else None,
        model=str(model) if model else None,
        timestamp=parse_timestamp(message.get("timestamp") or message.get("created_at")),
        message_id=str(message["id"]) if message.get("id") else None,
    )
