"""ChatGPT ``conversations.json``: the branch the user saw, as user/assistant turns.

A conversation is a tree (``mapping``): every regenerated answer or edited question starts a
new branch. The branch shown last ends at ``current_node``; walking its ``parent`` links to the
root and reversing gives the dialogue as the user read it, without the abandoned branches.
System prompts, tool calls and their results, and hidden messages (model context) are not part
of what was said and are dropped. The hidden custom-instructions message ("About me" and "how
to respond") is what the user wrote about himself: it becomes one profile document for the
whole export (see :mod:`.profile`). A turn of uploads only (images, or any file: a PDF, a
spreadsheet, a document) keeps a placeholder naming each file, so it is never silently empty.
The file is streamed one conversation at a time: a heavy user's export is hundreds of MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from memory_pipeline.records import Document, Turn
from memory_pipeline.sources._dialogue import (
    as_dict,
    build_dialogue,
    documents_from_json,
    parse_timestamp,
    repair_conversation,
)
from memory_pipeline.sources.archive import as_source
from memory_pipeline.sources.profile import GLOBAL_SCOPE, ProfileCollector, ProfileText, instruction_text

FORMAT = "chatgpt_json"
_TEXT_CONTENT = frozenset({"text", "multimodal_text"})
_ROLES = frozenset({"user", "assistant"})


def parse_chatgpt_export(path: Path) -> Iterator[Document]:
    """One dialogue per conversation of a ChatGPT export (an array, or a single conversation object),
    then the user's profile (custom instructions) once, as last seen."""
    path = as_source(path)
    profiles = ProfileCollector()
    yield from documents_from_json(path, convert=partial(conversation_document, profiles=profiles))
    yield from profiles.documents(path)


def conversation_document(
    conversation: dict, path: Path, source_hash: str, profiles: ProfileCollector | None = None
) -> Document:
    """The dialogue of one exported conversation; ValueError when it has none."""
    mapping = conversation.get("mapping")
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError("no 'mapping' of messages")
    default_model = conversation.get("default_model_slug")
    branch = _branch(mapping, _current_node(conversation, mapping))
    external_id = conversation.get("conversation_id") or conversation.get("id")
    if profiles is not None:
        for node in branch:
            if (sighting := _profile(as_dict(node).get("message"), conversation, source_hash)) is not None:
                profiles.offer(sighting)
    turns = [turn for node in branch if (turn := _turn(as_dict(node).get("message"), default_model)) is not None]
    title, turns, report = repair_conversation(str(conversation.get("title") or ""), turns)
    return build_dialogue(
        fmt=FORMAT,
        turns=turns,
        title=title,
        source_path=path,
        source_hash=source_hash,
        external_id=str(external_id) if external_id else None,
        repair=report,
        created_at=parse_timestamp(conversation.get("create_time")),
        updated_at=parse_timestamp(conversation.get("update_time")),
    )


def _current_node(conversation: dict, mapping: dict) -> str:
    """The end of the branch shown last; exports without ``current_node`` keep the newest leaf."""
    current = conversation.get("current_node")
    if isinstance(current, str) and current in mapping:
        return current
    leaves = [key for key, node in mapping.items() if not as_dict(node).get("children")]
    if not leaves:
        raise ValueError("no current_node and no leaf message")
    return max(leaves, key=lambda key: _created(mapping[key]))


def _created(node: object) -> float:
    stamp = as_dict(as_dict(node).get("message")).get("create_time")
    return float(stamp) if isinstance(stamp, int | float) else 0.0


def _branch(mapping: dict, leaf: str) -> list[object]:
    """Nodes from the root to ``leaf`` through ``parent`` links (a cycle or dangling link ends the walk)."""
    nodes: list[object] = []
    seen: set[str] = set()
    node_id: object = leaf
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        nodes.append(mapping[node_id])
        node_id = as_dict(mapping[node_id]).get("parent")
    nodes.reverse()
    return nodes


def _turn(message: object, default_model: object) -> Turn | None:
    """A user or assistant message the user saw, else None (system, tool, hidden, non-text, empty)."""
    message = as_dict(message)
    author = as_dict(message.get("author"))
    role = author.get("role")
    metadata = as_dict(message.get("metadata"))
    content = as_dict(message.get("content"))
    if role not in _ROLES or content.get("content_type") not in _TEXT_CONTENT:
        return None
    if metadata.get("is_visually_hidden_from_conversation") or metadata.get("is_user_system_message"):
        return None
    if message.get("recipient", "all") not in ("all", None):
        return None
    text = _parts_text(content.get("parts"), metadata.get("attachments"))
    if not text.strip():
        return None
    model = metadata.get("model_slug") or (default_model if role == "assistant" else None)
    return Turn(
        role=role,
        text=text,
        author=author.get("name") if isinstance(author.get("name"), str) else None,
        model=str(model) if model else None,
        timestamp=parse_timestamp(message.get("create_time")),
        message_id=str(message["id"]) if message.get("id") else None,
    )


def _parts_text(parts: object, attachments: object = None) -> str:
    """String parts of a message, plus voice-mode transcriptions; a message of uploads only is a
    placeholder per file naming it: images from their parts (named by the message's attachments,
    else the asset id), then the other attachments (documents appear in no part, only there)."""
    texts, images = [], []
    parts = parts if isinstance(parts, list) else []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif as_dict(part).get("content_type") == "audio_transcription" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif as_dict(part).get("content_type") == "image_asset_pointer":
            images.append(_image_name(as_dict(part), attachments))
    text = "\n\n".join(t for t in texts if t.strip())
    return text or "\n".join([*(f"[image: {name}]" for name in images), *_file_placeholders(attachments, set(images))])


def _file_placeholders(attachments: object, shown: set[str]) -> list[str]:
    """``[file: name]`` for each uploaded file not already shown as an image (``[image: name]`` for an
    image that has no part of its own)."""
    placeholders = []
    for attachment in map(as_dict, attachments if isinstance(attachments, list) else []):
        name = attachment.get("name") or attachment.get("id")
        if not isinstance(name, str) or not name.strip() or name in shown:
            continue
        shown.add(name)
        image = str(attachment.get("mime_type") or "").startswith("image/")
        placeholders.append(f"[{'image' if image else 'file'}: {name}]")
    return placeholders


def _image_name(part: dict, attachments: object) -> str:
    """The uploaded file's name for an image part: ``file-service://file-abc`` -> the attachment named ``file-abc``."""
    pointer = str(part.get("asset_pointer") or "")
    file_id = pointer.rsplit("/", 1)[-1]
    for attachment in attachments if isinstance(attachments, list) else []:
        attachment = as_dict(attachment)
        if file_id and attachment.get("id") == file_id and isinstance(attachment.get("name"), str):
            return attachment["name"]
    return file_id or "image"


def _profile(message: object, conversation: dict, source_hash: str) -> ProfileText | None:
    """The custom instructions in a conversation's hidden message, if this message holds them.

    Newer exports keep the user's own words in ``metadata.user_context_message_data``
    (``about_user_message`` / ``about_model_message``); older ones only in the
    ``user_editable_context`` content, wrapped in the model-facing boilerplate.
    """
    message = as_dict(message)
    content = as_dict(message.get("content"))
    data = as_dict(as_dict(message.get("metadata")).get("user_context_message_data"))
    if data:
        about_user, about_model = data.get("about_user_message"), data.get("about_model_message")
    elif content.get("content_type") == "user_editable_context":
        about_user, about_model = content.get("user_profile"), content.get("user_instructions")
    else:
        return None
    conversation_id = conversation.get("conversation_id") or conversation.get("id")
    return ProfileText(
        provider="chatgpt",
        scope=GLOBAL_SCOPE,
        about_user=instruction_text(about_user),
        about_model=instruction_text(about_model),
        created_at=parse_timestamp(conversation.get("create_time")),
        updated_at=parse_timestamp(conversation.get("update_time")) or parse_timestamp(conversation.get("create_time")),
        seen_in=str(conversation_id) if conversation_id else None,
        source_hash=source_hash,
    )
