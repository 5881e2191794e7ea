"""Source discovery and format dispatch: which parser reads which file.

Every parser is a function ``(path: Path) -> Iterator[Document]`` that raises
:class:`~memory_pipeline.errors.ParseError` naming the file and the reason when it cannot read it.
A *source unit* is what ingestion fingerprints: usually one file, but a nexus conversation note
written as a note plus a folder of exchange files is one unit of several files.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from memory_pipeline.errors import ParseError, UnsupportedFormatError
from memory_pipeline.records import Document, Kind

# format name -> (kind, "module:function")
PARSERS: dict[str, tuple[Kind, str]] = {
    "chatgpt_json": (Kind.DIALOGUE, "chatgpt:parse_chatgpt_export"),
    "claude_json": (Kind.DIALOGUE, "claude:parse_claude_export"),
    "nexus_md": (Kind.DIALOGUE, "nexus:parse_nexus_markdown"),
    "chat_jsonl": (Kind.DIALOGUE, "chat_jsonl:parse_chat_jsonl"),
    "pdf": (Kind.ARTICLE, "pdf:parse_pdf"),
    "markdown": (Kind.ARTICLE, "markdown:parse_markdown"),
    "text": (Kind.ARTICLE, "text:parse_plain_text"),
    "html": (Kind.ARTICLE, "html:parse_html"),
    "srt": (Kind.LECTURE, "subtitles:parse_srt"),
    "vtt": (Kind.LECTURE, "subtitles:parse_vtt"),
    "transcript": (Kind.LECTURE, "transcript:parse_transcript"),
}

SUPPORTED_EXTENSIONS = {".json", ".jsonl", ".md", ".markdown", ".pdf", ".txt", ".html", ".htm", ".srt", ".vtt"}
_SNIFF_BYTES = 256 * 1024


@dataclass(frozen=True)
class SourceUnit:
    """One thing ingestion tracks: its main path and every file whose bytes make up its content."""

    path: Path
    kind: Kind | None
    members: tuple[Path, ...] = field(default=())

    def files(self) -> tuple[Path, ...]:
        return (self.path, *self.members)

    def fingerprint(self) -> str:
        """sha256 over the bytes of all member files (not their paths or mtimes)."""
        digest = hashlib.sha256()
        for file in self.files():
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\x00")
        return digest.hexdigest()

    def signature(self) -> tuple[int, int]:
        """(total size, newest mtime_ns) of the member files: the cheap "did anything change" check."""
        stats = [f.stat() for f in self.files()]
        return sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)


def detect_format(path: Path, kind: Kind | None = None) -> str:
    """Pick a parser by extension, sniffing content where the extension is ambiguous.

    ``kind`` comes from the configured source folder; it decides e.g. whether a ``.txt`` is an
    article or a lecture transcript, and whether a ``.md`` is a chat note or an article.
    """
    ext = path.suffix.lower()
    if ext == ".json":
        head = _sniff(path)
        if b'"chat_messages"' in head:
            return "claude_json"
        if b'"mapping"' in head:
            return "chatgpt_json"
        if not head.strip():
            raise ParseError(path, "empty file")
        raise UnsupportedFormatError(
            path, "JSON is neither a ChatGPT export (no 'mapping') nor a Claude export (no 'chat_messages')"
        )
    if ext == ".jsonl":
        return "chat_jsonl"
    if ext in {".md", ".markdown"}:
        if kind is Kind.ARTICLE:
            return "markdown"
        if kind is Kind.DIALOGUE or _looks_like_nexus(_sniff(path)):
            return "nexus_md"
        return "markdown"
    if ext == ".pdf":
        return "pdf"
    if ext in {".html", ".htm"}:
        return "html"
    if ext == ".srt":
        return "srt"
    if ext == ".vtt":
        return "vtt"
    if ext == ".txt":
        if kind is Kind.LECTURE:
            return "transcript"
        if kind is Kind.ARTICLE:
            return "text"
        return "transcript" if _looks_like_transcript(_sniff(path)) else "text"
    raise UnsupportedFormatError(
        path, f"unknown extension {ext or '(none)'!r}; supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))}"
    )


def guess_kind(unit: SourceUnit) -> Kind:
    """The kind a source under no configured folder is, from its format.

    A conversation note with its folder of exchanges is a dialogue whatever its note looks like;
    a file no parser takes counts as an article, so the article report names it.
    """
    if unit.members:
        return Kind.DIALOGUE
    try:
        return PARSERS[detect_format(unit.path)][0]
    except ParseError:
        return Kind.ARTICLE


def check_size(path: Path, size: int, max_bytes: int) -> None:
    """Refuse a source over the size limit from its stat alone, before anything reads or hashes it.

    ``size`` is the whole unit's: a note and its folder of exchanges are parsed as one document.
    """
    if size > max_bytes:
        raise ParseError(path, f"file is {human_size(size)}, over the size limit of {human_size(max_bytes)} (ingest.max_file_mb)")


def titles_from_name(path: Path) -> set[str]:
    """The titles parsers fall back to, made from the file's name, when a file has no title of its own."""
    from memory_pipeline.sources._article import readable_stem
    from memory_pipeline.sources.nexus import stem_title

    return {readable_stem(path), stem_title(path)}


def parse_file(path: Path, kind: Kind | None = None) -> Iterator[Document]:
    """Parse one file into documents, after the checks every format shares (exists, non-empty)."""
    path = Path(path)
    if not path.is_file():
        raise ParseError(path, "not a file or does not exist")
    if path.stat().st_size == 0:
        raise ParseError(path, "empty file")
    fmt = detect_format(path, kind)
    expected_kind, target = PARSERS[fmt]
    if kind is not None and kind is not expected_kind:
        raise UnsupportedFormatError(path, f"a {fmt} file is a {expected_kind.value}, not a {kind.value}")
    module_name, func_name = target.split(":")
    parser = getattr(importlib.import_module(f"{__name__}.{module_name}"), func_name)
    yield from parser(path)


def discover_sources(root: Path, kind: Kind | None = None) -> Iterator[SourceUnit]:
    """Walk a file or folder recursively and yield source units in a stable order.

    Hidden files and folders (``.obsidian``, ``.git``, ``.trash``) are skipped. Files of unknown
    extension are still yielded so that ingestion reports them rather than silently ignoring them.
    """
    from memory_pipeline.sources.nexus import claimed_by_conversation_note, conversation_note_members

    root = Path(root)
    if root.is_file():
        yield SourceUnit(root, kind, tuple(conversation_note_members(root)))
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in {".md", ".markdown"} and kind is not Kind.ARTICLE:
                if claimed_by_conversation_note(path):
                    continue
                yield SourceUnit(path, kind, tuple(conversation_note_members(path)))
            else:
                yield SourceUnit(path, kind)


def discover_all(roots: Iterable[tuple[Path, Kind | None]]) -> list[SourceUnit]:
    """Source units of several configured roots, de-duplicated by path."""
    seen: dict[Path, SourceUnit] = {}
    for root, kind in roots:
        if not Path(root).exists():
            continue
        for unit in discover_sources(Path(root), kind):
            seen.setdefault(unit.path.resolve(), unit)
    return list(seen.values())


def human_size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_SNIFF_BYTES)


def _looks_like_nexus(head: bytes) -> bool:
    markers = (b">[!nexus_user]", b">[!nexus_agent]", b"### User", b"### Assistant", b"conversation_id:")
    return any(m in head for m in markers)


def _looks_like_transcript(head: bytes) -> bool:
    import re

    return len(re.findall(rb"\[\d{1,2}:\d{2}(?::\d{2})?\]", head)) >= 2
