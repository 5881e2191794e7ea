"""Source discovery and format dispatch: which parser reads which file.

Every parser is a function ``(path: Path) -> Iterator[Document]`` that raises
:class:`~memory_pipeline.errors.ParseError` naming the file and the reason when it cannot read it.
A *source unit* is what ingestion fingerprints: usually one file, but a nexus conversation note
written as a note plus a folder of exchange files is one unit of several files.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from memory_pipeline.errors import ParseError, UnsupportedFormatError
from memory_pipeline.records import Document, Kind
from memory_pipeline.sources.archive import (
    MEMBER_READ_ERRORS,
    ArchiveLimits,
    ArchiveMember,
    check_member,
    check_not_nested,
    is_archive,
    is_export_companion,
    open_archive,
    read_head,
    skip_reason,
)
from memory_pipeline.sources.sniff import SNIFF_BYTES, Detection, sniff_format

# format name -> (kind, "module:function")
PARSERS: dict[str, tuple[Kind, str]] = {
    "chatgpt_json": (Kind.DIALOGUE, "chatgpt:parse_chatgpt_export"),
    "claude_json": (Kind.DIALOGUE, "claude:parse_claude_export"),
    "nexus_md": (Kind.DIALOGUE, "nexus:parse_nexus_markdown"),
    "chat_jsonl": (Kind.DIALOGUE, "chat_jsonl:parse_chat_jsonl"),
    "chat_text": (Kind.DIALOGUE, "chat_text:parse_chat_text"),
    "claude_projects": (Kind.ARTICLE, "claude:parse_claude_projects"),
    "claude_memories": (Kind.PROFILE, "claude:parse_claude_memories"),
    "pdf": (Kind.ARTICLE, "pdf:parse_pdf"),
    "markdown": (Kind.ARTICLE, "markdown:parse_markdown"),
    "text": (Kind.ARTICLE, "text:parse_plain_text"),
    "html": (Kind.ARTICLE, "html:parse_html"),
    "srt": (Kind.LECTURE, "subtitles:parse_srt"),
    "vtt": (Kind.LECTURE, "subtitles:parse_vtt"),
    "transcript": (Kind.LECTURE, "transcript:parse_transcript"),
}
# the parts of a Claude export beside its conversations: read from a dialogue folder too
EXPORT_PARTS = frozenset({"claude_projects", "claude_memories"})

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceUnit:
    """One thing ingestion tracks: its main path and every file whose bytes make up its content."""

    path: Path
    kind: Kind | None
    members: tuple[Path, ...] = field(default=())
    skipped: str | None = None  # why the entry is never opened (a FIFO, a socket, a device, a link loop)

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
    """The parser format of a file, by content first and extension as fallback (see :mod:`.sniff`)."""
    return sniff_format(path, kind).fmt


def guess_kind(unit: SourceUnit) -> Kind:
    """The kind a source under no configured folder is, from its format.

    A conversation note with its folder of exchanges is a dialogue whatever its note looks like,
    and so is an archive (exports are chats; each member's documents still go to their own kind) or a
    part of a Claude export (profiles have no folder of their own); a file no parser takes counts as
    an article, so the article report names it.
    """
    if unit.members or is_archive(unit.path):
        return Kind.DIALOGUE
    if unit.skipped:
        return Kind.ARTICLE
    try:
        fmt = detect_format(unit.path)
    except ParseError:
        return Kind.ARTICLE
    return Kind.DIALOGUE if PARSERS[fmt][0] is Kind.PROFILE else PARSERS[fmt][0]


def check_size(path: Path, size: int, max_bytes: int) -> None:
    """Refuse a source over the size limit from its stat alone, before anything reads or hashes it.

    ``size`` is the whole unit's: a note and its folder of exchanges are parsed as one document.
    """
    if size > max_bytes:
        raise ParseError(
            path, f"file is {human_size(size)}, over the size limit of {human_size(max_bytes)} (ingest.max_file_mb)"
        )


def titles_from_name(path: Path) -> set[str]:
    """The titles parsers fall back to, made from the file's name, when a file has no title of its own."""
    from memory_pipeline.sources._article import readable_stem
    from memory_pipeline.sources.nexus import stem_title

    return {readable_stem(path), stem_title(path)}


def parse_file(path: Path, kind: Kind | None = None, *, limits: ArchiveLimits | None = None) -> Iterator[Document]:
    """Parse one file (or ZIP archive) into documents, after the checks every format shares."""
    for document, _ in parse_detected(path, kind, limits=limits):
        yield document


def parse_detected(
    path: Path, kind: Kind | None = None, *, limits: ArchiveLimits | None = None
) -> Iterator[tuple[Document, Detection]]:
    """Documents of a file with the detection that chose their parser (``parse`` shows it).

    A ZIP archive yields the documents of all its members, each routed by its own content; their
    kinds may differ from ``kind`` (an export holds chats and attached documents).
    """
    path = Path(path)
    if not path.is_file():
        raise ParseError(path, "not a file or does not exist")
    if path.stat().st_size == 0:
        raise ParseError(path, "empty file")
    if is_archive(path):
        yield from _parse_archive(path, limits or ArchiveLimits())
        return
    detection = sniff_format(path, kind)
    if detection.fmt == "zip":
        raise UnsupportedFormatError(path, "a ZIP archive under another extension; rename it to .zip")
    for document in _run_parser(path, detection.fmt, kind):
        yield document, detection


def _run_parser(path: Path | ArchiveMember, fmt: str, kind: Kind | None) -> Iterator[Document]:
    expected_kind, target = PARSERS[fmt]
    if kind is not None and kind is not expected_kind and not (kind is Kind.DIALOGUE and fmt in EXPORT_PARTS):
        raise UnsupportedFormatError(path, f"a {fmt} file is a {expected_kind.value}, not a {kind.value}")
    module_name, func_name = target.split(":")
    parser = getattr(importlib.import_module(f"{__name__}.{module_name}"), func_name)
    yield from parser(path)


def _parse_archive(path: Path, limits: ArchiveLimits) -> Iterator[tuple[Document, Detection]]:
    """Every member of an archive, streamed and routed by content; refused and broken members are
    reported together at the end (after the others' documents) as one ParseError naming each.

    Members an export carries beside its conversations (``chat.html``, a rendered copy of them;
    account and feedback files; images) are skipped, as are files no parser reads.
    """
    zip_file, members = open_archive(path, limits)
    problems: list[str] = []
    produced = 0
    with zip_file:
        for member in members:
            try:
                check_member(member)
                head = read_head(member, SNIFF_BYTES)
                check_not_nested(member, head)
                if skip_reason(member, head):
                    logger.info("%s: skipped (%s)", member, skip_reason(member, head))
                    continue
                try:
                    detection = sniff_format(member, None, head=head)
                except ParseError as exc:
                    logger.info("%s: skipped (%s)", member, exc.reason)
                    continue
                detection = Detection(detection.fmt, f"{member.member} in archive; {detection.detector}")
                for document in _run_parser(member, detection.fmt, None):
                    produced += 1
                    yield document, detection
            except ParseError as exc:
                problems.append(f"{member.member}: {exc.reason}")
            except MEMBER_READ_ERRORS as exc:
                problems.append(f"{member.member}: corrupt member data ({type(exc).__name__}: {exc})")
            except (ValueError, KeyError, TypeError, UnicodeError, RecursionError) as exc:
                problems.append(f"{member.member}: {type(exc).__name__}: {exc}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ParseError(path, f"{len(problems)} member(s) refused or unreadable: {shown}")
    if not produced:
        raise ParseError(path, "no member of the archive holds conversations or documents")


def discover_sources(root: Path, kind: Kind | None = None) -> Iterator[SourceUnit]:
    """Walk a file or folder recursively and yield source units in a stable order.

    Hidden files and folders (``.obsidian``, ``.git``, ``.trash``) are skipped, and so are the
    companions of an unpacked export beside its ``conversations.json`` (``chat.html`` would be every
    conversation again as an article; account, feedback and image files hold no conversation). Files of
    unknown extension are still yielded so that ingestion reports them rather than silently ignoring them,
    and so are entries that must not be opened (FIFOs, sockets, devices, broken or looping links) and
    folders that cannot be listed, each with its reason in ``skipped``. Links to folders are not
    followed, so a link loop cannot make the walk endless.
    """
    from memory_pipeline.sources.nexus import claimed_by_conversation_note, conversation_note_members

    root = Path(root)
    if root.is_file():
        yield SourceUnit(root, kind, tuple(conversation_note_members(root)))
        return
    unlistable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable.append):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        unpacked_export = "conversations.json" in filenames
        for error in unlistable:
            yield SourceUnit(Path(error.filename), kind, skipped=f"folder cannot be listed: {error.strerror}")
        unlistable.clear()
        for name in sorted(filenames):
            if name.startswith(".") or (unpacked_export and is_export_companion(name)):
                continue
            path = Path(dirpath) / name
            if (reason := unopenable_reason(path)) is not None:
                yield SourceUnit(path, kind, skipped=reason)
            elif path.suffix.lower() in {".md", ".markdown"} and kind is not Kind.ARTICLE:
                if claimed_by_conversation_note(path):
                    continue
                yield SourceUnit(path, kind, tuple(conversation_note_members(path)))
            else:
                yield SourceUnit(path, kind)

    for error in unlistable:
        yield SourceUnit(Path(error.filename), kind, skipped=f"folder cannot be listed: {error.strerror}")


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def unopenable_reason(path: Path) -> str | None:
    """Why a directory entry must not be opened (opening a FIFO blocks for ever), or None for a file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop; skipped"
        return f"broken link or unreadable entry ({exc.strerror}); skipped"
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    return f"{what}, not a regular file; skipped without opening it"


def resolved_path(path: Path) -> Path:
    """``path.resolve()``, or the absolute path when resolving fails (a symbolic link loop)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def bytes_safe(text: str) -> str:
    """Text that can be written as UTF-8: a file name's undecodable bytes (kept by Python as lone
    surrogates) become ``\\xNN`` escapes, so the name can be stored, shown and searched."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def bytes_safe_document(doc: Document) -> Document:
    """A document from a file whose name is not UTF-8: its path (and a title made from it) get ``\\xNN``
    escapes, so it can be stored and shown; everything else is as parsed."""

    def scrub(value):
        if isinstance(value, str):
            return bytes_safe(value)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    return Document.model_validate(scrub(doc.model_dump()))


def source_key(path: Path, *, resolve: bool = True) -> str:
    """What ingestion knows a source by: its resolved path, in a form that can be written as UTF-8.

    An entry that is skipped goes by its own absolute path, so a broken link is named, not its target.
    """
    return bytes_safe(str(resolved_path(path)) if resolve else os.path.abspath(path))


def human_size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"
