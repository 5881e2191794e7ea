"""Decode source bytes and undo double-encoding ("mojibake") so every parser sees clean text.

Chat exports often arrive double-encoded: UTF-8 bytes were once decoded as Mac Roman, cp1252,
latin-1, cp1251 or KOI8-R and saved again as UTF-8, so ``Но вот`` reads ``–ù–æ –≤–æ—Ç`` (Mac Roman),
``РќРѕ РІРѕС‚`` (cp1251) or ``п²п╬ п╡п╬я┌`` (KOI8-R). The accident happens
to a whole file, so the decision is made per file (or per group of messages of one export), and
then exactly one round of undoing is applied line by line where it makes the line better.
Correct text, including text that quotes mojibake on purpose, must come back byte-identical.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import NamedTuple

from memory_pipeline.errors import ParseError
from memory_pipeline.records import RepairReport
from memory_pipeline.sources.archive import as_source

# Codecs a UTF-8 file may have been misread with, most common first (ties go to the earlier one).
_CODECS = ("cp1252", "cp1251", "mac_roman", "latin-1", "koi8_r")
# Codecs whose high half is a whole (Cyrillic) alphabet: correct Russian is written in the very
# characters their mojibake is made of, so their evidence is read more strictly (_coincidental).
_ALPHABETIC = frozenset({"cp1251", "koi8_r"})
# What ends a word in running text (``В»``, ``С…``, ``и…»``, ``В\xa0``): after a letter these read
# as correct text, not as the continuation bytes of a UTF-8 sequence.
_CLOSERS = "»”“’‘›…—–\xa0\xad™®"

# Evidence of an accident must outweigh correct non-ASCII text at least this many times over.
_DOMINANCE = 4

_JUNK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b\u2060]")
_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_NON_ASCII_VISIBLE = re.compile(r"[^\x00-\x7f\s]")
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_BYTE_WORD = re.compile(rb"[A-Za-z\x80-\xff]+")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
# combining accents that decomposed Latin letters use: grave..caron, dot below..ogonek
_NFD_ACCENTS = frozenset([*range(0x300, 0x30D), *range(0x323, 0x329)])
# UTF-8 sequences as (first lead byte, last lead byte, continuation bytes that follow), and the
# continuation byte range
_UTF8_SHAPE = ((0xC2, 0xDF, 1), (0xE0, 0xEF, 2), (0xF0, 0xF4, 3))
_CONTINUATION = (0x80, 0xBF)


@dataclass(frozen=True)
class _Codec:
    """A single-byte codec as a table from the code point it shows to the byte it came from, and
    the shapes of UTF-8 sequences written in the characters it shows for those bytes."""

    name: str
    to_byte: dict[int, int]
    sequences: re.Pattern[str]
    alphabetic: bool

    def encode(self, run: str) -> bytes:
        """Bytes of a run of characters that all come from this codec's high half."""
        return run.translate(self.to_byte).encode("latin-1")


@cache
def _codec(name: str) -> _Codec:
    """Build the reverse table and the sequence pattern; cp1252 and cp1251 are "sloppy": their
    undefined bytes map to the C1 controls that browsers and latin-1 round trips keep, so
    ``\\x81`` in ``Ñ\\x81`` (``с``) and ``\\x98`` in ``Р\\x98`` (``И``) are recovered."""
    to_byte: dict[int, int] = {}
    for value in range(0x80, 0x100):
        try:
            char = bytes([value]).decode(name)
        except UnicodeDecodeError:
            char = chr(value)
        to_byte[ord(char)] = value

    def shown_as(low: int, high: int) -> str:
        """A regex class of the characters the codec shows for bytes ``low``..``high``."""
        return "[" + "".join(re.escape(chr(c)) for c, b in to_byte.items() if low <= b <= high) + "]"

    continuation = shown_as(*_CONTINUATION)
    shapes = "|".join(f"{shown_as(low, high)}{continuation}{{{n}}}" for low, high, n in _UTF8_SHAPE)
    return _Codec(name, to_byte, re.compile(shapes), name in _ALPHABETIC)


def _plausible(char: str, before: str) -> bool:
    """Whether a decoded character is something real text contains (not a control, private-use
    or unassigned code point, not IPA or the rare scripts that only coincidental byte pairs
    produce, and a combining accent only after a letter, as in macOS decomposed text)."""
    category = unicodedata.category(char)
    if category in ("Cc", "Cn", "Co", "Cs"):
        return False
    code = ord(char)
    if 0x250 <= code < 0x300 or 0x700 <= code < 0x800:
        return False
    if 0x300 <= code < 0x370:
        return before.isalpha()
    return True


class _Piece(NamedTuple):
    """A stretch of text that decodes as one UTF-8 sequence under a codec: where it is, what it
    decodes to, and the characters just before and after it, which judge how convincing it is."""

    start: int
    end: int
    source: str
    decoded: str
    before: str
    after: str


@lru_cache(maxsize=1 << 16)
def _decode(name: str, source: str) -> str | None:
    """The character a sequence spells, None for an overlong or surrogate form. Remembered: a
    garbled file repeats a few thousand sequences (its alphabet) hundreds of thousands of times."""
    try:
        return _codec(name).encode(source).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _sequences(text: str, codec: _Codec) -> list[_Piece]:
    """Every stretch of ``text`` whose codec bytes form one plausible UTF-8 character."""
    pieces: list[_Piece] = []
    for match in codec.sequences.finditer(text):
        start, end = match.span()
        decoded = _decode(codec.name, match.group())
        if decoded is None:
            continue
        adjacent = pieces and pieces[-1].end == start
        previous = pieces[-1].decoded if adjacent else text[start - 1 : start]
        if not _plausible(decoded, previous):
            continue
        after = text[end : end + 1] or " "
        pieces.append(_Piece(start, end, match.group(), decoded, text[start - 1 : start] or " ", after))
    return pieces


def _strong(piece: _Piece, *, in_word: bool) -> bool:
    """Whether a decoded sequence is convincing evidence that the file is mojibake.

    The accents of decomposed (macOS) Latin text after an ASCII letter convince; other marks,
    rare Latin extensions, Armenian and historic Cyrillic come from coincidental pairs in
    correct text (``’é`` in Mac Roman is ``Վ``); a non-Latin letter glued to an ASCII letter
    (``l’été`` -> ``lՎté``, ``café®—`` -> ``caf鮗``) is what such coincidences look like, so
    neither counts (Vietnamese letters, Latin Extended Additional, are Latin). Nor does a lone
    pair of symbols with no letter in or beside it (``–≥`` may be mathematics); several
    sequences in a row (``in_word``, e.g. Hebrew ``×©×\x95...``) are convincing without one.
    """
    char = piece.decoded
    code = ord(char)
    if code in _NFD_ACCENTS:
        return bool(_ASCII_LETTER.match(piece.before))
    if unicodedata.category(char).startswith("M"):
        return False
    if 0x180 <= code < 0x370 and code not in range(0x218, 0x21C):
        return False
    if 0x460 <= code < 0x48A or 0x530 <= code < 0x590:
        return False
    glued = _ASCII_LETTER.match(piece.before) or _ASCII_LETTER.match(piece.after)
    if code >= 0x180 and char.isalpha() and not 0x1E00 <= code < 0x1F00 and glued:
        return False
    return in_word or any(c.isalpha() for c in (piece.before, *piece.source, piece.after))


def _evidence(prose: str, codec: _Codec) -> tuple[int, int]:
    """Characters in convincing and in coincidental-looking mojibake sequences."""
    strong = weak = 0
    for group in _adjacent_groups(_sequences(prose, codec)):
        if codec.alphabetic and _coincidental(group, codec):
            weak += sum(len(piece.source) for piece in group)
            continue
        in_word = sum(1 for p in group if _strong(p, in_word=True)) >= 2
        for piece in group:
            if _strong(piece, in_word=in_word):
                strong += len(piece.source)
            else:
                weak += len(piece.source)
    return strong, weak


def _coincidental(group: list[_Piece], codec: _Codec) -> bool:
    """Whether a garbled-looking word of an alphabetic codec is correct text of that alphabet.

    Every character of real mojibake from the codec's high half belongs to some sequence, so a
    word that touches one that does not (``Рё`` in ``Рёв``, ``ТЁ`` in ``ТЁМНЫЙ``, ``В»`` in
    ``«В»``) is correct text. So is a lone sequence that reads like the end of a word: a letter,
    maybe more letters (never a capital after a small one), then closing punctuation (``ЕЁ``,
    ``С…``, ``и…»``), unless it sits inside an ASCII word (``naГЇve``). ``вЂ”``, ``В«``,
    ``в„–`` and emoji like ``рџ”Ґ`` read like nothing a Cyrillic writer types, so they stay.
    """
    before, after = group[0].before, group[-1].after
    if ord(before) in codec.to_byte or ord(after) in codec.to_byte:
        return True
    if len(group) > 1 or _ASCII_LETTER.match(before) or _ASCII_LETTER.match(after):
        return False
    letters = group[0].source.rstrip(_CLOSERS)
    small_then_capital = any(a.islower() and b.isupper() for a, b in zip(letters, letters[1:], strict=False))
    return letters.isalpha() and not small_then_capital


def _adjacent_groups(pieces: list[_Piece]) -> list[list[_Piece]]:
    """Sequences that follow each other with nothing between: one garbled word."""
    groups: list[list[_Piece]] = []
    for piece in pieces:
        if groups and groups[-1][-1].end == piece.start:
            groups[-1].append(piece)
        else:
            groups.append([piece])
    return groups


def _detect(texts: Sequence[str]) -> _Codec | None:
    """The codec of the accident, or None when the texts read as correct text.

    An accident needs convincing sequences that outweigh the unexplained non-ASCII text; among
    codecs that qualify, the one that explains the most wins (latin-1 over cp1252 when C1
    controls are part of the sequences). Code spans and fenced blocks are left out: that is
    where people quote garbled text on purpose.
    """
    proses = [_CODE.sub(" ", text) for text in texts if not text.isascii()]
    visible = sum(len(_NON_ASCII_VISIBLE.findall(prose)) for prose in proses)
    best: tuple[tuple[int, int], _Codec] | None = None
    for name in _CODECS:
        codec = _codec(name)
        strong = weak = 0
        for prose in proses:
            s, w = _evidence(prose, codec)
            strong, weak = strong + s, weak + w
        other = visible - strong - weak
        rank = (strong + weak, strong)
        if strong >= 2 and strong >= _DOMINANCE * other and (best is None or rank > best[0]):
            best = (rank, codec)
    return best[1] if best else None


def _badness(line: str, pieces: list[_Piece]) -> int:
    """Characters that look broken: decodable mojibake sequences, C1 controls, private use."""
    broken = sum(1 for c in line if unicodedata.category(c) in ("Cc", "Co") and c not in "\t\n\r")
    return sum(len(p.source) for p in pieces) + broken


def _undo_line(line: str, pieces: list[_Piece]) -> str:
    parts: list[str] = []
    position = 0
    for piece in pieces:
        parts.append(line[position : piece.start])
        parts.append(piece.decoded)
        position = piece.end
    parts.append(line[position:])
    return "".join(parts)


def _undo(text: str, codec: _Codec) -> tuple[str, int]:
    """One round of undoing, per line, kept only where the line gets better.

    A line whose non-ASCII text is mostly unexplained is correct text the accident did not
    reach (a Russian note added to a cp1251-garbled file), so its coincidences stay as they are.
    """
    lines = text.split("\n")
    repaired = 0
    for index, line in enumerate(lines):
        if line.isascii():
            continue
        pieces = _sequences(line, codec)
        explained = sum(len(piece.source) for piece in pieces)
        if not pieces or len(_NON_ASCII_VISIBLE.findall(line)) - explained > explained:
            continue
        candidate = _undo_line(line, pieces)
        if _badness(candidate, _sequences(candidate, codec)) < _badness(line, pieces):
            lines[index] = candidate
            repaired += 1
    return "\n".join(lines), repaired


def clean_text(text: str) -> tuple[str, int]:
    """Remove BOMs, zero-width spaces, word joiners and control characters (not \\n \\r \\t).

    ZWJ and ZWNJ stay: emoji sequences and Persian/Indic spelling need them.
    """
    return _JUNK.subn("", text)


def _finish(text: str, codec: _Codec | None) -> tuple[str, RepairReport]:
    repaired_lines = 0
    if codec is not None:
        text, repaired_lines = _undo(text, codec)
    text, junk = clean_text(text)
    normalized = unicodedata.normalize("NFC", text)
    report = RepairReport(
        repaired=repaired_lines > 0,
        codec=codec.name if repaired_lines else None,
        lines_repaired=repaired_lines,
        junk_removed=junk,
        normalized_nfc=normalized != text,
    )
    return normalized, report


def repair_text(text: str) -> tuple[str, RepairReport]:
    """Undo a file's double-encoding if it has one, then clean and NFC-normalize."""
    return _finish(text, _detect([text]))


def repair_many(texts: Sequence[str]) -> tuple[list[str], RepairReport]:
    """Repair the strings of one document (e.g. messages of a JSON export) under one decision."""
    codec = _detect(texts)
    merged = RepairReport()
    results = []
    for text in texts:
        fixed, report = _finish(text, codec)
        results.append(fixed)
        merged = merged.merge(report)
    return results, merged


def _looks_binary(data: bytes) -> bool:
    """NUL bytes or many control bytes: no text file of ours has them, even if it would decode."""
    if b"\x00" in data:
        return True
    sample = data[: 64 * 1024]
    return len(_CONTROL_BYTES.findall(sample)) > 0.05 * len(sample)


def _legacy_codecs(data: bytes) -> tuple[str, ...]:
    """Single-byte encodings to try, likeliest first.

    Russian has words made only of high bytes, cp1252 text has accents inside ASCII words. Running
    text is mostly small letters, which are 0xE0-0xFF in cp1251 and 0xC0-0xDF in KOI8-R.
    """
    cyrillic = latin = small_cp1251 = small_koi8 = 0
    for word in _BYTE_WORD.findall(data[: 256 * 1024]):
        high = sum(1 for b in word if b >= 0x80)
        if high == len(word) and high >= 2:
            cyrillic += 1
            small_cp1251 += sum(1 for b in word if b >= 0xE0)
            small_koi8 += sum(1 for b in word if 0xC0 <= b < 0xE0)
        elif high and high < len(word):
            latin += 1
    if cyrillic <= latin:
        return ("cp1252", "cp1251")
    return ("koi8_r",) if small_koi8 > small_cp1251 else ("cp1251", "cp1252")


def decode_bytes(data: bytes, path: str | Path) -> tuple[str, str]:
    """Decode a text file's bytes: BOM, else strict UTF-8, else a legacy single-byte encoding."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(name.removesuffix("-sig")), name
            except UnicodeDecodeError as exc:
                raise ParseError(path, f"has a {name} byte order mark but is not valid {name}: {exc.reason}") from exc
    if _looks_binary(data):
        raise ParseError(path, "binary file, not text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for name in _legacy_codecs(data):
        try:
            return data.decode(name), name
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def read_text_file(path: Path) -> tuple[str, RepairReport]:
    """Read, decode and repair a text file; the report records the encoding its bytes had."""
    try:
        data = as_source(path).read_bytes()
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    text, encoding = decode_bytes(data, path)
    repaired, report = repair_text(text)
    return repaired, report.model_copy(update={"source_encoding": encoding})
