"""Claude data export (``conversations.json``): ``chat_messages`` as user/assistant turns.

Newer exports carry each message as typed ``content`` blocks (text, thinking, tool use, tool
results) next to a flattened ``text``; the text blocks are what was said, so they are preferred
and ``text`` is the fallback for older exports. Streamed one conversation at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from memory_pipeline.records import Document, Turn
from memory_pipeline.sources._dialogue import (
    as_dict,
    build_dialogue,
    documents_from_json,
    parse_timestamp,
    repair_conversation,
)

FORMAT = "claude_json"
_ROLES = {"human": "user", "user": "user", "assistant": "assistant"}


def parse_claude_export(path: Path) -> Iterator[Document]:
    """One dialogue per conversation of a Claude export (an array, or a single conversation object)."""
    return documents_from_json(Path(path), convert=conversation_document)


def conversation_document(conversation: dict, path: Path, source_hash: str) -> Document:
    """The dialogue of one exported conversation; ValueError when it has none."""
    messages = conversation.get("chat_messages")
    if not isinstance(messages, list):
        raise ValueError("no 'chat_messages' list")
    model = conversation.get("model")
    turns = [turn for message in messages if (turn := _turn(as_dict(message), model)) is not None]
    title, turns, report = repair_conversation(str(conversation.get("name") or ""), turns)
    external_id = conversation.get("uuid") or conversation.get("id")
    return build_dialogue(
        fmt=FORMAT,
        turns=turns,
        title=title,
        source_path=path,
        source_hash=source_hash,
        external_id=str(external_id) if external_id else None,
        repair=report,
        created_at=parse_timestamp(conversation.get("created_at")),
        updated_at=parse_timestamp(conversation.get("updated_at")),
    )


def _turn(message: dict, model: object) -> Turn | None:
    sender = message.get("sender")
    role = _ROLES.get(sender) if isinstance(sender, str) else None
    if role is None:
        return None
    text = _content_text(message.get("content"))
    if not text.strip() and isinstance(message.get("text"), str):
        text = message["text"]
    if not text.strip():
        return None
    return Turn(
        role=role,
        text=text,
        author=sender,
        model=str(model) if model and role == "assistant" else None,
        timestamp=parse_timestamp(message.get("created_at")),
        message_id=str(message["uuid"]) if message.get("uuid") else None,
    )


def _content_text(blocks: object) -> str:
    """The text blocks of a message; thinking, tool use and tool results are not the conversation."""
    if not isinstance(blocks, list):
        return ""
    texts = [
        block["text"]
        for block in blocks
        if as_dict(block).get("type") == "text" and isinstance(block.get("text"), str) and block["text"].strip()
    ]
    return "\n\n".join(texts)
