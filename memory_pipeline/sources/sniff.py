"""Which parser reads a file, decided by its content first and its extension only as a fallback.

People save exports under whatever name the browser or the editor offers: a nexus chat note as
``.txt``, ``conversations.json`` as ``conversations (1)``, subtitles as ``.txt``. The first
256 KB say what a file is far more reliably than its name: the JSON shape of a ChatGPT or a
Claude export, nexus markers, SRT/VTT timing lines, ``User:``/``Assistant:`` transcripts. The
source folder's kind (dialogues / articles / lectures), when there is one, is the user's own
statement, so content is only believed within that kind; the extension decides when the
content says nothing. :class:`Detection` names the detector that decided, for ``parse``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from memory_pipeline.errors import ParseError, UnsupportedFormatError
from memory_pipeline.records import Kind

SNIFF_BYTES = 256 * 1024
SUPPORTED_EXTENSIONS = {".json", ".jsonl", ".md", ".markdown", ".pdf", ".txt", ".html", ".htm", ".srt", ".vtt", ".zip"}

# format -> kind, for formats the content can name (kept here to avoid importing the parser table)
_FORMAT_KINDS = {
    "chatgpt_json": Kind.DIALOGUE,
    "claude_json": Kind.DIALOGUE,
    "claude_projects": Kind.ARTICLE,
    "claude_memories": Kind.PROFILE,
    "nexus_md": Kind.DIALOGUE,
    "chat_text": Kind.DIALOGUE,
    "chat_jsonl": Kind.DIALOGUE,
    "pdf": Kind.ARTICLE,
    "html": Kind.ARTICLE,
    "srt": Kind.LECTURE,
    "vtt": Kind.LECTURE,
    "transcript": Kind.LECTURE,
}
_TEXT_FORMATS = frozenset({"nexus_md", "chat_text", "transcript"})
_BOM = b"\xef\xbb\xbf"
_NEXUS_MARKERS = (b">[!nexus_user]", b">[!nexus_agent]", b"### User", b"### Assistant", b"conversation_id:")
_SRT_CUE = re.compile(rb"(?m)^\s*\d+\s*\r?\n\s*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->\s*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}")
_TRANSCRIPT_MARK = re.compile(rb"\[\d{1,2}:\d{2}(?::\d{2})?\]")
_HTML_START = re.compile(
    rb"\A\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE | re.DOTALL
)
_LABEL_LINE = r"(?mi)^[ \t]*(?:\*\*)?(?:{names})(?:\*\*)?[ \t]*:"
_USER_LABEL = re.compile(_LABEL_LINE.format(names="user|you|human|me|я|пользователь"))
_ASSISTANT_LABEL = re.compile(_LABEL_LINE.format(names=r"assistant|chatgpt|claude|gpt-?[\w.-]*|ai|ассистент|бот"))


@dataclass(frozen=True)
class Detection:
    """A parser choice and what made it: ``content: ...``, ``extension .md``, or ``folder kind ...``."""

    fmt: str
    detector: str


def sniff_format(path: Path, kind: Kind | None = None, *, head: bytes | None = None) -> Detection:
    """Pick a parser for a file (or archive member) from its first bytes, then its extension.

    ``kind`` is the configured source folder's kind: a verdict from loose text cues (nexus
    markers, ``User:`` labels, time marks) of another kind is not believed there (a nexus note in
    the articles folder is read as an article, as the user put it); signatures and JSON shapes
    always are, so a misplaced export is reported as such. ``head`` saves a second read.
    """
    if head is None:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    if not head.strip():
        if path.suffix.lower() in SUPPORTED_EXTENSIONS - {".json", ".zip"}:
            return _by_extension(path, kind)  # the parser says what a blank file of its kind lacks
        raise ParseError(path, "empty file")
    if path.suffix.lower() in {".json", ".jsonl"} and (head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head[:2]):
        raise ParseError(path, "JSON in UTF-16; exports are read as UTF-8: save the file as UTF-8 and ingest again")
    by_content = content_format(head)
    loose_cue = by_content is not None and by_content.fmt in _TEXT_FORMATS and kind is not None
    if by_content is None or (loose_cue and _FORMAT_KINDS[by_content.fmt] is not kind):
        return _by_extension(path, kind)
    if by_content.fmt == "json":
        if path.suffix.lower() == ".jsonl":
            return Detection("chat_jsonl", "extension .jsonl (JSON of no known export shape)")
        raise UnsupportedFormatError(
            path, "JSON is neither a ChatGPT export (no 'mapping') nor a Claude export (no 'chat_messages')"
        )
    return by_content


def content_format(head: bytes) -> Detection | None:
    """What the first bytes of a file say it is, or None when they say nothing conclusive."""
    if head.startswith(b"%PDF-"):
        return Detection("pdf", "content: %PDF- signature")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Detection("zip", "content: ZIP signature")
    text = head[len(_BOM) :] if head.startswith(_BOM) else head
    stripped = text.lstrip()
    if stripped[:1] in (b"[", b"{"):
        return _json_format(stripped)
    if stripped.startswith(b"WEBVTT"):
        return Detection("vtt", "content: WEBVTT header")
    if _SRT_CUE.search(text[:4096]):
        return Detection("srt", "content: SRT cue timing line")
    if _HTML_START.match(text):
        return Detection("html", "content: HTML document")
    if b"\x00" in text[:8192]:
        return None
    if any(marker in text for marker in _NEXUS_MARKERS):
        return Detection("nexus_md", "content: nexus chat markers")
    decoded = text.decode("utf-8", errors="ignore")
    if _USER_LABEL.search(decoded) and _ASSISTANT_LABEL.search(decoded):
        return Detection("chat_text", "content: User:/Assistant: transcript")
    if len(_TRANSCRIPT_MARK.findall(text)) >= 2:
        return Detection("transcript", "content: [mm:ss] time marks")
    return None


def _json_format(head: bytes) -> Detection | None:
    """JSON Lines vs ChatGPT conversations vs Claude conversations vs Claude projects, from the first bytes."""
    first, _, rest = head.partition(b"\n")
    if head[:1] == b"{" and rest.strip()[:1] == b"{" and _is_json(first):
        return Detection("chat_jsonl", "content: one JSON object per line")
    if b'"chat_messages"' in head:
        return Detection("claude_json", "content: JSON with 'chat_messages' (Claude export)")
    if b'"mapping"' in head:
        return Detection("chatgpt_json", "content: JSON with 'mapping' (ChatGPT export)")
    if b'"docs"' in head and b'"prompt_template"' in head:
        return Detection("claude_projects", "content: JSON with 'docs' and 'prompt_template' (Claude projects)")
    if b'"conversations_memory"' in head or b'"project_memories"' in head:
        return Detection("claude_memories", "content: JSON with 'conversations_memory' (Claude memories)")
    return Detection("json", "content: JSON of no known export shape")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _by_extension(path: Path, kind: Kind | None) -> Detection:
    """The extension's parser, the configured kind deciding where one extension serves two kinds."""
    ext = path.suffix.lower()
    label = f"extension {ext}" + (f" in a {kind.value} folder" if kind else "")
    if ext == ".json":
        raise UnsupportedFormatError(
            path, "JSON is neither a ChatGPT export (no 'mapping') nor a Claude export (no 'chat_messages')"
        )
    if ext == ".jsonl":
        return Detection("chat_jsonl", label)
    if ext in {".md", ".markdown"}:
        return Detection("nexus_md" if kind is Kind.DIALOGUE else "markdown", label)
    if ext == ".pdf":
        return Detection("pdf", label)
    if ext in {".html", ".htm"}:
        return Detection("html", label)
    if ext in {".srt", ".vtt"}:
        return Detection(ext[1:], label)
    if ext == ".txt":
        if kind is Kind.DIALOGUE:
            return Detection("chat_text", label)
        return Detection("transcript" if kind is Kind.LECTURE else "text", label)
    raise UnsupportedFormatError(
        path, f"unknown extension {ext or '(none)'!r}; supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))}"
    )
