"""ZIP exports read in place: every member is streamed from the archive, nothing is extracted.

ChatGPT and Claude hand out their exports as ZIP files, and a monthly re-export lands beside the
old one; asking the user to unpack them by hand loses the "which export was this" trail and
leaves stale copies around. A member is offered to the parsers as an :class:`ArchiveMember`,
which has the part of ``Path``'s surface they use (name, suffix, ``open``, ``read_bytes``,
``stat``) and prints as ``export.zip!conversations.json``: that is the document's source path,
its provenance. Members are never written anywhere, so a member name like ``../../etc/x``
cannot escape; such names are still refused, because no honest export has them.

An archive is checked from its central directory before any member is read: member count,
total and per-member uncompressed size, and compression ratio (zip bombs). ``zipfile`` never
returns more bytes than a member's declared size (a lie ends in a CRC error), so checking the
declared sizes bounds the work. Archives inside the archive are refused by name or signature.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import IO

from memory_pipeline.errors import ParseError

ARCHIVE_SUFFIXES = frozenset({".zip"})
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
# Signatures and suffixes of archives and compressed files a member must not be.
_NESTED_SIGNATURES = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"BZh",
    b"\xfd7zXZ\x00",
)
_NESTED_SUFFIXES = frozenset({".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst"})
_RATIO_FLOOR_BYTES = 1 << 20  # below 1 MiB uncompressed a high ratio is harmless (a file of blanks)
_MEMBER_PATH = re.compile(r"^(?P<archive>.+?\.zip)!(?P<member>.+)$", re.IGNORECASE)


class ArchiveError(ParseError):
    """An archive that cannot be read as a whole: corrupt, truncated, or over a safety limit."""


class ArchiveLimitError(ArchiveError):
    """An archive over a configured limit (member count, uncompressed size, compression ratio)."""


class NestedArchiveError(ParseError):
    """A member that is itself an archive or compressed file; exports never nest them."""


class UnsafeMemberError(ParseError):
    """A member whose name or type no honest export has (absolute path, ``..``, link, encryption)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Safety limits checked from the central directory before anything is decompressed."""

    max_members: int = 20_000
    max_total_bytes: int = 8_000_000_000
    max_member_bytes: int = 1_024_000_000
    max_ratio: float = 100.0


class ArchiveMember:
    """A file inside a ZIP archive, readable in place; ``str()`` is ``archive.zip!member/name``."""

    def __init__(self, archive: Path, zip_file: zipfile.ZipFile, info: zipfile.ZipInfo, mtime_ns: int):
        self.archive = archive
        self.member = info.filename
        self._zip = zip_file
        self._info = info
        self._mtime_ns = mtime_ns
        self._pure = PurePosixPath(info.filename)

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def stem(self) -> str:
        return self._pure.stem

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    def __str__(self) -> str:
        return f"{self.archive}!{self.member}"

    def __repr__(self) -> str:
        return f"ArchiveMember({str(self)!r})"

    def open(self, mode: str = "rb") -> IO[bytes]:
        if mode != "rb":
            raise ValueError("archive members are read-only and binary")
        return self._zip.open(self._info)

    def read_bytes(self) -> bytes:
        with self.open() as handle:
            return handle.read()

    def is_file(self) -> bool:
        return True

    def exists(self) -> bool:
        return True

    def is_dir(self) -> bool:
        return False

    def stat(self) -> SimpleNamespace:
        return SimpleNamespace(st_size=self._info.file_size, st_mtime_ns=self._mtime_ns)

    def content_hash(self) -> str:
        """Identity of the member's bytes without decompressing them: name, CRC-32 and size.

        Hashing the decompressed bytes would read every member twice; the CRC the archive keeps
        changes with the content, which is all the source hash is used for.
        """
        key = f"{self.member}\x1f{self._info.CRC:08x}\x1f{self._info.file_size}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_archive(path: Path) -> bool:
    """A ZIP by suffix or by signature (an export renamed by accident is still one)."""
    if path.suffix.lower() in ARCHIVE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in ZIP_SIGNATURES
    except OSError:
        return False


def source_file(source_path: str | Path) -> Path:
    """The file on disk behind a document's source path (the archive, for ``x.zip!member``)."""
    match = _MEMBER_PATH.match(str(source_path))
    return Path(match.group("archive")) if match else Path(source_path)


def open_archive(path: Path, limits: ArchiveLimits) -> tuple[zipfile.ZipFile, list[ArchiveMember]]:
    """The open archive and its file members, after the whole-archive checks.

    Raises ArchiveError when the central directory cannot be read (truncated download, not a
    ZIP) and ArchiveLimitError when the archive is over a limit.
    """
    try:
        zip_file = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise ArchiveError(path, f"not a readable ZIP archive: truncated or corrupt central directory ({exc})") from exc
    try:
        infos = [i for i in zip_file.infolist() if not i.is_dir()]
        _check_limits(path, infos, limits, path.stat().st_size)
    except BaseException:
        zip_file.close()
        raise
    mtime_ns = path.stat().st_mtime_ns
    return zip_file, [ArchiveMember(path, zip_file, info, mtime_ns) for info in infos]


def _check_limits(path: Path, infos: list[zipfile.ZipInfo], limits: ArchiveLimits, archive_bytes: int) -> None:
    """Member count, sizes and ratios as the central directory declares them.

    The ratio is checked per member and for the whole archive: members that overlap (one
    compressed stream referenced by many entries) each look modest, their sum does not.
    """
    if len(infos) > limits.max_members:
        raise ArchiveLimitError(
            path, f"{len(infos)} members, over the limit of {limits.max_members} (ingest.archive_max_members)"
        )
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        raise ArchiveLimitError(
            path,
            f"{total:,} bytes uncompressed, over the limit of {limits.max_total_bytes:,} (ingest.archive_max_total_mb)",
        )
    overall = total / max(archive_bytes, 1)
    if total > _RATIO_FLOOR_BYTES and overall > limits.max_ratio:
        raise ArchiveLimitError(
            path,
            f"expands {overall:.0f}x in all, over the ratio limit of {limits.max_ratio:g}x "
            "(ingest.archive_max_ratio): a zip bomb?",
        )
    for info in infos:
        if info.file_size > limits.max_member_bytes:
            raise ArchiveLimitError(
                path,
                f"member {info.filename!r} is {info.file_size:,} bytes uncompressed, "
                "over the size limit (ingest.max_file_mb)",
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
            raise ArchiveLimitError(
                path,
                f"member {info.filename!r} expands {ratio:.0f}x, over the ratio limit of {limits.max_ratio:g}x "
                "(ingest.archive_max_ratio): a zip bomb?",
            )


def check_member(member: ArchiveMember) -> None:
    """Refuse, before reading it, a member no export has: unsafe name, link, or encrypted."""
    info = member._info
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        raise UnsafeMemberError(member, "unsafe member name (absolute or climbing out with '..'); member refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeMemberError(member, "member is a symbolic link; refused")
    if info.flag_bits & 0x1:
        raise UnsafeMemberError(member, "member is encrypted; refused")


def check_not_nested(member: ArchiveMember, head: bytes) -> None:
    """Refuse a member that is itself an archive or compressed file, by suffix or signature."""
    if member.suffix.lower() in _NESTED_SUFFIXES or head.startswith(_NESTED_SIGNATURES):
        raise NestedArchiveError(
            member, "nested archive refused (NestedArchiveError): unpack it and ingest its contents"
        )


def read_head(member: ArchiveMember, size: int) -> bytes:
    """The first ``size`` bytes of a member; ParseError naming the member when its data is corrupt."""
    try:
        with member.open() as handle:
            return handle.read(size)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise ParseError(member, f"corrupt member data ({type(exc).__name__}: {exc})") from exc


MEMBER_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


# Files an export carries beside its conversations: a rendered copy of them (chat.html would
# duplicate every conversation as an article), account data, feedback and share lists.
EXPORT_COMPANIONS = frozenset(
    {
        "chat.html",
        "user.json",
        "users.json",
        "message_feedback.json",
        "shared_conversations.json",
        "model_comparisons.json",
        "user_settings.json",
    }
)
_MEDIA_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".webp", ".heic", ".bmp", ".svg"}
    | {".wav", ".mp3", ".m4a", ".ogg", ".webm", ".mp4", ".mov", ".dat"}
)
_MEDIA_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"ID3", b"OggS", b"\x1aE\xdf\xa3")


def is_export_companion(name: str) -> bool:
    """A file an export carries beside ``conversations.json`` that holds no conversation of its own."""
    return name.lower() in EXPORT_COMPANIONS or PurePosixPath(name).suffix.lower() in _MEDIA_SUFFIXES


def skip_reason(member: ArchiveMember, head: bytes) -> str | None:
    """Why a member is not parsed (export companion, image or audio), or None to parse it."""
    if member.name.lower() in EXPORT_COMPANIONS:
        return "export companion file, not conversations"
    if member.suffix.lower() in _MEDIA_SUFFIXES or head.startswith(_MEDIA_SIGNATURES) or head[4:8] == b"ftyp":
        return "image or audio file (image turns keep a placeholder naming it)"
    return None


def as_source(path: str | Path | ArchiveMember) -> Path | ArchiveMember:
    """A parser's argument as something readable: an archive member as is, anything else as a Path."""
    return path if isinstance(path, ArchiveMember) else Path(path)
