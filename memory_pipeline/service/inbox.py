"""The durable inbox: live conversations appended as JSONL before the service answers.

One file per conversation under ``storage/inbox/``, in the generic chat JSONL format the
ingest stage already reads, so the file sensor picks new turns up like any other source and a
pipeline that is down loses nothing. Each line is fsynced before the request returns (and the
folder too when the line opens a new file, or a crash could lose the file's name).

A conversation id names one history: lines are keyed by (conversation id, turn index), and a
turn that comes again with the same role and text (whitespace aside) is a duplicate, not
written twice, so retries and full-history re-sends are idempotent. A request whose history
disagrees with the recorded one at some turn (an edited question, a regenerated answer, two
chats under one id) is another history: all its messages go to a branch, the id
``<conversation id>~<hash of the first disagreeing turn>``, where the same disagreeing history
lands again when resent and is deduplicated there. Nothing said is dropped, and the result
counts the disagreeing turns as ``conflicts``.

File names: a readable slug of the id plus a hash of the whole id, so no two ids share a file
(punctuation, Cyrillic and very long ids all differ in the hash) and no name starts with a dot
(discovery skips hidden files). The name is not parsed back: every line carries the full id.
A file is created by linking a complete temp file into place, which fails rather than replace
a file another writer created first, and lines are appended under a per-file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_core import PydanticSerializationError

from memory_pipeline.atomic import fsync_dir
from memory_pipeline.records import stable_id

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_CONVERSATION_ID_CHARS = 200
_SLUG_CHARS = 60


def check_conversation_id(conversation_id: str) -> str:
    """Refuse ids that cannot name one conversation plainly: empty, too long, or with control characters."""
    if not conversation_id:
        raise ValueError("conversation id is empty")
    if len(conversation_id) > MAX_CONVERSATION_ID_CHARS:
        raise ValueError(
            f"conversation id is {len(conversation_id)} characters, over the limit of {MAX_CONVERSATION_ID_CHARS}"
        )
    if match := _CONTROL.search(conversation_id):
        raise ValueError(f"conversation id holds a control character ({match.group()!r} at {match.start()})")
    return conversation_id


def inbox_file_name(conversation_id: str) -> str:
    """``<slug>-<hash>.jsonl``: readable, never hidden, and distinct for distinct ids."""
    slug = _UNSAFE.sub("_", conversation_id)[:_SLUG_CHARS].strip("_") or "conversation"
    digest = hashlib.sha256(conversation_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{slug}-{digest}.jsonl"


class InboxMessage(BaseModel):
    role: str = Field(pattern=r"^(system|user|assistant|tool|developer)$")
    content: str | list[dict] | None = None
    turn_index: int | None = Field(
        None, ge=0, description="position in the conversation; default: list position + start_index"
    )
    timestamp: datetime | None = None
    model: str | None = None


class RecordResult(BaseModel):
    conversation_id: str = Field(
        description="where the messages are recorded: the id asked for, or its branch when the history disagreed"
    )
    recorded: int
    duplicates: int
    conflicts: int = Field(
        0, description="turns that differ from the turn recorded at the same index, so the request went to a branch"
    )
    inbox_file: str


def message_text(content: str | list[dict] | None) -> str:
    """OpenAI content may be a string or a list of parts; keep the text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type", "text") == "text"
    )


def overlong_message(messages: Sequence[InboxMessage], limit: int) -> str | None:
    """Why a request's messages are refused for length (limits.max_message_chars), or None."""
    for position, message in enumerate(messages):
        length = len(message_text(message.content))
        if length > limit:
            return f"message {position} is {length} characters, over the limit of {limit} (limits.max_message_chars)"
    return None


def require_valid_unicode(model: BaseModel) -> None:
    """Refuse lone surrogates (a JSON ``"\\ud800"`` escape): Python accepts them, but they cannot be
    written as UTF-8, so the append, or the forwarding, would fail after the request was accepted."""
    try:
        model.model_dump_json()
    except PydanticSerializationError:
        raise ValueError("text is not valid Unicode (a lone surrogate escape such as \\ud800)") from None


def turn_indexes(messages: Sequence[InboxMessage], start_index: int = 0) -> list[int]:
    """Each message's turn index: its own, else its list position shifted by ``start_index``."""
    return [m.turn_index if m.turn_index is not None else start_index + position for position, m in enumerate(messages)]


def turn_fingerprint(role: object, text: object) -> str:
    """What makes two turns at one index the same turn: role and text, whitespace aside (clients trim)."""
    return stable_id(str(role), " ".join(str(text).split()))


def branch_id(conversation_id: str, turn_index: int, fingerprint: str) -> str:
    """The same disagreeing turn always leads to the same branch, so resending it stays idempotent."""
    return f"{conversation_id}~{stable_id(str(turn_index), fingerprint)[:10]}"


class Inbox:
    """Append-only, fsynced JSONL per conversation; safe for concurrent requests in one process."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.folder.parent)
        _unhide_legacy_files(self.folder)
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()
        self._recorded: dict[str, dict[int, str]] = {}
        self._paths: dict[str, Path] = {}

    def path_for(self, conversation_id: str) -> Path:
        """The conversation's file; one written under the old naming keeps being appended to,
        so a conversation is never split over two files (its turns would form two documents)."""
        path = self.folder / inbox_file_name(conversation_id)
        legacy = self.folder / _visible(f"{_LEGACY_UNSAFE.sub('_', conversation_id)[:80] or 'conversation'}.jsonl")
        if not path.exists() and legacy.is_file() and self._turns_in(legacy, conversation_id):
            return legacy
        return path

    def _lock(self, path: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    @staticmethod
    def _turns_in(path: Path, conversation_id: str) -> dict[int, str]:
        """Turn index -> fingerprint of the id's lines in a file; the first line of an index wins, as in the parser."""
        known: dict[int, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    continue
                if (
                    isinstance(row, dict)
                    and row.get("conversation_id") == conversation_id
                    and isinstance(row.get("turn_index"), int)
                ):
                    known.setdefault(row["turn_index"], turn_fingerprint(row.get("role"), row.get("content") or ""))
        return known

    def _known_turns(self, conversation_id: str, path: Path) -> dict[int, str]:
        """Turn index -> fingerprint of what is recorded for the id, read once, then kept current."""
        if conversation_id not in self._recorded:
            self._recorded[conversation_id] = self._turns_in(path, conversation_id)
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
        """Append the turns not recorded yet; a history that disagrees with the recorded one goes to its branch."""
        conversation_id = check_conversation_id(conversation_id) if conversation_id is not None else uuid.uuid4().hex
        return self._record(
            messages, conversation_id=conversation_id, title=title, model=model, start_index=start_index
        )

    def _record(
        self,
        messages: Sequence[InboxMessage],
        *,
        conversation_id: str,
        title: str | None,
        model: str | None,
        start_index: int = 0,
    ) -> RecordResult:
        turns = list(zip(turn_indexes(messages, start_index), messages, strict=True))
        if len({index for index, _ in turns}) < len(turns):
            raise ValueError("two messages claim the same turn index")
        with self._guard:
            path = self._paths.get(conversation_id) or self._paths.setdefault(
                conversation_id, self.path_for(conversation_id)
            )
        with self._lock(path):
            known = self._known_turns(conversation_id, path)
            fingerprints = {
                index: turn_fingerprint(message.role, message_text(message.content)) for index, message in turns
            }
            conflicts = sorted(
                index for index, fingerprint in fingerprints.items() if index in known and known[index] != fingerprint
            )
            if not conflicts:
                return self._append(conversation_id, path, turns, fingerprints, known, title=title, model=model)
        first = conflicts[0]
        branch = self._record(
            [message.model_copy(update={"turn_index": index}) for index, message in turns],
            conversation_id=branch_id(conversation_id, first, fingerprints[first]),
            title=title,
            model=model,
        )
        return branch.model_copy(update={"conflicts": branch.conflicts + len(conflicts)})

    def _append(
        self,
        conversation_id: str,
        path: Path,
        turns: list[tuple[int, InboxMessage]],
        fingerprints: dict[int, str],
        known: dict[int, str],
        *,
        title: str | None,
        model: str | None,
    ) -> RecordResult:
        now = datetime.now(UTC)
        lines = []
        for index, message in turns:
            if index in known:
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
        if lines:
            _append_durably(path, "\n".join(lines) + "\n")
        known.update(fingerprints)
        return RecordResult(
            conversation_id=conversation_id,
            recorded=len(lines),
            duplicates=len(turns) - len(lines),
            inbox_file=str(path),
        )


def _visible(name: str) -> str:
    return f"_{name}" if name.startswith(".") else name


def _unhide_legacy_files(folder: Path) -> None:
    """Rename files the old naming hid (an id starting with a dot) so that discovery ingests them."""
    for path in folder.glob(".*.jsonl"):
        target = folder / _visible(path.name)
        if path.is_file() and not target.exists():
            os.rename(path, target)
            fsync_dir(folder)


def _append_durably(path: Path, text: str) -> None:
    """Append and fsync; a line left half-written by a crash is closed first so it can't swallow ours.

    A new conversation file appears whole (temp file, fsync, link into place, directory fsync), so
    the file sensor or an ingest run never reads it empty or half-written; the link fails when the
    file exists (another process created it first), and the lines are appended to it instead.
    Appends hold an exclusive ``flock``, so two processes serving one inbox do not interleave lines.
    """
    data = text.encode("utf-8")
    if not path.exists() and _create_whole(path, data):
        return
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_whole(path: Path, data: bytes) -> bool:
    """Put a new file with ``data`` at ``path`` unless one is there already; False when one was."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp_name)
