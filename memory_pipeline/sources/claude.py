"""Claude data export (``conversations.json``): ``chat_messages`` as user/assistant turns.

Newer exports carry each message as typed ``content`` blocks (text, thinking, tool use, tool
results) next to a flattened ``text``; the text blocks are what was said, so they are preferred
and ``text`` is the fallback for older exports. Streamed one conversation at a time.

Files the user pasted or uploaded keep their text as ``attachments[].extracted_content``: each
becomes an article (format ``claude_attachment``) linked to its conversation and message, and a
message of attachments only says which files it carried. ``projects.json`` holds the projects'
knowledge documents (articles under the project's name, format ``claude_project_doc``) and their
custom instructions (a profile under the project's name, see :mod:`.profile`). ``memories.json``
(newer exports) holds what Claude remembers about the user: ``conversations_memory``, account-wide,
and ``project_memories`` by project id; each becomes a profile written by Claude. ``users.json``
holds only the account's name, e-mail and phone: nothing the user said about himself, so it is
not read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from memory_pipeline.ingest.text_repair import repair_many
from memory_pipeline.records import Document, Kind, Turn, stable_id
from memory_pipeline.sources._article import group_sections, split_paragraphs
from memory_pipeline.sources._dialogue import (
    as_dict,
    build_dialogue,
    conversation_label,
    documents_from_json,
    files_sha256,
    iter_json_items,
    parse_timestamp,
    repair_conversation,
)
from memory_pipeline.sources.archive import as_source
from memory_pipeline.sources.profile import GLOBAL_SCOPE, ProfileText, profile_document

log = logging.getLogger(__name__)

FORMAT = "claude_json"
_ROLES = {"human": "user", "user": "user", "assistant": "assistant"}


def parse_claude_export(path: Path) -> Iterator[Document]:
    """One dialogue per conversation of a Claude export (an array, or a single conversation object)."""
    return documents_from_json(as_source(path), convert=conversation_document)


def conversation_document(conversation: dict, path: Path, source_hash: str) -> list[Document]:
    """The dialogue of one exported conversation, then its attachments' articles; ValueError when it has no dialogue."""
    messages = conversation.get("chat_messages")
    if not isinstance(messages, list):
        raise ValueError("no 'chat_messages' list")
    model = conversation.get("model")
    turns = [turn for message in messages if (turn := _turn(as_dict(message), model)) is not None]
    title, turns, report = repair_conversation(str(conversation.get("name") or ""), turns)
    external_id = conversation.get("uuid") or conversation.get("id")
    dialogue = build_dialogue(
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
    return [dialogue, *_attachment_articles(messages, dialogue, path, source_hash)]


def _attachment_articles(messages: list, dialogue: Document, path: Path, source_hash: str) -> list[Document]:
    """One article per attachment with extracted text, linked to the conversation and message it came with."""
    articles = []
    for message in map(as_dict, messages):
        for position, attachment in enumerate(a for a in map(as_dict, message.get("attachments") or []) if a):
            content = attachment.get("extracted_content")
            if not isinstance(content, str) or not content.strip():
                continue
            name = str(attachment.get("file_name") or f"attachment {position + 1}")
            link = {"conversation_id": dialogue.external_id or "", "conversation_doc_id": dialogue.doc_id}
            if message.get("uuid"):
                link["message_id"] = str(message["uuid"])
            key = (dialogue.external_id or dialogue.doc_id, str(message.get("uuid") or ""), str(position), name)
            articles.append(
                text_article(
                    fmt="claude_attachment",
                    key=key,
                    title=name,
                    heading=(dialogue.title,),
                    text=content,
                    path=path,
                    source_hash=source_hash,
                    created_at=parse_timestamp(message.get("created_at")),
                    metadata={**link, "file_name": name},
                )
            )
    return articles


def text_article(
    *,
    fmt: str,
    key: tuple[str, ...],
    title: str,
    heading: tuple[str, ...],
    text: str,
    path: Path,
    source_hash: str,
    created_at: datetime | None,
    metadata: dict[str, str],
) -> Document:
    """An article made from a text an export carries inside a larger file; its id follows ``key``."""
    (title, text), repair = repair_many([title, text])
    sections = group_sections((heading, paragraph) for paragraph in split_paragraphs(text))
    if not sections:
        raise ValueError(f"{title}: no text")
    return Document(
        doc_id=stable_id(fmt, *key),
        kind=Kind.ARTICLE,
        format=fmt,
        title=title,
        source_path=str(path),
        source_hash=source_hash,
        external_id="/".join(key),
        created_at=created_at,
        sections=sections,
        repair=repair,
        metadata=metadata,
    ).finalize()


def parse_claude_projects(path: Path) -> Iterator[Document]:
    """Knowledge documents of each project in ``projects.json`` as articles, and each project's
    custom instructions as its profile. A project of an odd shape is skipped with a warning."""
    path = as_source(path)
    source_hash = files_sha256([path])
    for index, project in iter_json_items(path):
        label = conversation_label(project, index)
        try:
            yield from _project_documents(as_dict(project), path, source_hash)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            log.warning("%s: skipped project %s: %s", path, label, exc)


def _project_documents(project: dict, path: Path, source_hash: str) -> Iterator[Document]:
    name = str(project.get("name") or project.get("uuid") or "project")
    project_id = str(project.get("uuid") or name)
    for position, doc in enumerate(map(as_dict, project.get("docs") or [])):
        content = doc.get("content")
        if not isinstance(content, str) or not content.strip():
            continue
        filename = str(doc.get("filename") or f"document {position + 1}")
        yield text_article(
            fmt="claude_project_doc",
            key=(project_id, str(doc.get("uuid") or position)),
            title=f"{name}: {filename}",
            heading=(name,),
            text=content,
            path=path,
            source_hash=source_hash,
            created_at=parse_timestamp(doc.get("created_at")),
            metadata={"project": name, "project_id": project_id, "file_name": filename},
        )
    instructions = project.get("prompt_template")
    if isinstance(instructions, str) and instructions.strip():
        yield profile_document(
            ProfileText(
                provider="claude",
                scope=f"project {name}",
                about_user="",
                about_model=instructions,
                created_at=parse_timestamp(project.get("created_at")),
                updated_at=parse_timestamp(project.get("updated_at")),
                seen_in=project_id,
                source_hash=source_hash,
                title=f"Instructions for project {name}",
            ),
            path,
        )


def parse_claude_memories(path: Path) -> Iterator[Document]:
    """Claude's memory of the user in ``memories.json`` as profiles: the account-wide one, then one per project.

    The file carries no date, so these profiles are undated: the user's own dated words (ChatGPT's
    custom instructions) come first where both exist.
    """
    path = as_source(path)
    source_hash = files_sha256([path])
    for index, entry in iter_json_items(path):
        entry = as_dict(entry)
        memories = [(GLOBAL_SCOPE, entry.get("conversations_memory"), "")]
        memories += [
            (f"project memory {project_id}", text, f"What Claude remembers about me in project {project_id}")
            for project_id, text in as_dict(entry.get("project_memories")).items()
        ]
        for scope, text, title in memories:
            if not isinstance(text, str) or not text.strip():
                continue
            yield profile_document(
                ProfileText(
                    provider="claude",
                    scope=scope,
                    about_user=text,
                    about_model="",
                    created_at=None,
                    updated_at=None,
                    seen_in=str(entry.get("account_uuid") or index),
                    source_hash=source_hash,
                    title=title,
                    written_by="claude",
                ),
                path,
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
        text = _files_placeholder(message)
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


def _files_placeholder(message: dict) -> str:
    """What a message of files only carried, so it does not vanish: ``[file: name]`` per file."""
    names = [
        str(f["file_name"])
        for key in ("attachments", "files")
        for f in map(as_dict, message.get(key) or [])
        if f.get("file_name")
    ]
    return "\n".join(f"[file: {name}]" for name in dict.fromkeys(names))
