"""A conversation copied as plain text: ``User: ...`` / ``Assistant: ...`` paragraphs.

People paste chats into notes and save them as ``.txt``; read as an article they lose who said
what. A line that starts with a role label (``User:``, ``You:``, ``Human:``, ``Я:``,
``Assistant:``, ``ChatGPT:``, ``Claude:``, ``Ассистент:``, optionally bold) opens a message;
the lines up to the next label are its text. Text before the first label is the title when it
is one short line. The whole file is one conversation, identified by its bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import read_text_file
from memory_pipeline.records import Document, Turn
from memory_pipeline.sources._dialogue import build_dialogue, files_sha256
from memory_pipeline.sources.archive import as_source

FORMAT = "chat_text"
_LABEL = re.compile(
    r"^[ \t]*(?:\*\*)?(?P<name>user|you|human|me|я|пользователь|assistant|chatgpt|claude|gpt-?[\w.-]*|ai|ассистент|бот)"
    r"(?:\*\*)?[ \t]*:(?:\*\*)?[ \t]*(?P<rest>.*)$",
    re.IGNORECASE,
)
_USER_NAMES = frozenset({"user", "you", "human", "me", "я", "пользователь"})
_TITLE_CHARS = 120


def parse_chat_text(path: Path) -> Iterator[Document]:
    """The one conversation of a ``User:``/``Assistant:`` transcript."""
    path = as_source(path)
    text, report = read_text_file(path)
    preamble: list[str] = []
    turns: list[Turn] = []
    lines: list[str] = []
    role = author = None
    for line in text.replace("\r\n", "\n").split("\n"):
        match = _LABEL.match(line)
        if match:
            if role:
                turns.append(Turn(role=role, text="\n".join(lines).strip(), author=author))
            author = match.group("name")
            role = "user" if author.lower() in _USER_NAMES else "assistant"
            lines = [match.group("rest")]
        elif role:
            lines.append(line)
        else:
            preamble.append(line)
    if role:
        turns.append(Turn(role=role, text="\n".join(lines).strip(), author=author))
    if not any(t.role == "user" for t in turns) or not any(t.role == "assistant" for t in turns):
        raise ParseError(path, "no User:/Assistant: messages found (not a chat transcript)")
    heading = "\n".join(preamble).strip().lstrip("#").strip()
    title = heading if heading and "\n" not in heading and len(heading) <= _TITLE_CHARS else ""
    try:
        yield build_dialogue(
            fmt=FORMAT,
            turns=turns,
            title=title,
            source_path=path,
            source_hash=files_sha256([path]),
            external_id=None,
            repair=report,
        )
    except ValueError as exc:
        raise ParseError(path, str(exc)) from exc
