"""The durable inbox: live conversations appended as JSONL before the service answers.

One file per conversation under ``storage/inbox/``, in the generic chat JSONL format the
ingest stage already reads, so the file sensor picks new turns up like any other source and a
pipeline that is down loses nothing. Each line is fsynced before the request returns. Lines are
keyed by (conversation id, turn index): a turn already recorded is not written again, and the
parser drops duplicates too, so retries and full-history re-sends are idempotent.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class InboxMessage(BaseModel):
    role: str = Field(pattern=r"^(system|user|assistant|tool|developer)$")
    content: str | list[dict] | None = None
    turn_index: int | None = Field(None, ge=0, description="position in the conversation; default: list position + start_index")
    timestamp: datetime | None = None
    model: str | None = None


class RecordResult(BaseModel):
    conversation_id: str
    recorded: int
    duplicates: int
    inbox_file: str


def message_text(content: str | list[dict] | None) -> str:
    """OpenAI content may be a string or a list of parts; keep the text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type", "text") == "text")


class Inbox:
    """Append-only, fsynced JSONL per conversation; safe for concurrent requests in one process."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._recorded: dict[str, set[int]] = {}

    def path_for(self, conversation_id: str) -> Path:
        safe = _SAFE.sub("_", conversation_id)[:80] or "conversation"
        return self.folder / f"{safe}.jsonl"

    def _lock(self, conversation_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(conversation_id, threading.Lock())

    def _known_turns(self, conversation_id: str, path: Path) -> set[int]:
        if conversation_id not in self._recorded:
            known: set[int] = set()
            if path.is_file():
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if row.get("conversation_id") == conversation_id and isinstance(row.get("turn_index"), int):
                        known.add(row["turn_index"])
            self._recorded[conversation_id] = known
        return self._recorded[conversation_id]

    def record(
        self,
        messages: Sequence[InboxMessage],
        *,
        conversation_id: str | None = None,
        title: str | None = None,
        model: str | None = None,
        start_index: int = 0,
    ) -> RecordResult:
        conversation_id = conversation_id or uuid.uuid4().hex
        path = self.path_for(conversation_id)
        now = datetime.now(UTC)
        with self._lock(conversation_id):
            known = self._known_turns(conversation_id, path)
            lines = []
            duplicates = 0
            for position, message in enumerate(messages):
                index = message.turn_index if message.turn_index is not None else start_index + position
                if index in known:
                    duplicates += 1
                    continue
                row = {
                    "conversation_id": conversation_id,
                    "turn_index": index,
                    "role": message.role,
                    "content": message_text(message.content),
                    "timestamp": (message.timestamp or now).isoformat(),
                    "model": message.model or model,
                    "title": title,
                }
                lines.append(json.dumps(row, ensure_ascii=False))
                known.add(index)
            if lines:
                _append_durably(path, "\n".join(lines) + "\n")
        return RecordResult(conversation_id=conversation_id, recorded=len(lines), duplicates=duplicates, inbox_file=str(path))


def _append_durably(path: Path, text: str) -> None:
    """Append and fsync; a line left half-written by a crash is closed first so it can't swallow ours."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                text = "\n" + text
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
