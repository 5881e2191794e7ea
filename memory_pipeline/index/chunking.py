"""Token-aware chunking: documents -> the pieces that are embedded, indexed and searched.

Each kind is cut where its meaning breaks: a dialogue per exchange (question + answer), an
article per section and paragraph, a lecture per time window. Budgets are counted in the
embedding model's own tokens (cl100k only where no model is given), because what a chunk holds
depends on the model's tokenizer and language: a Russian paragraph is about 3x more tokens in
MiniLM's English WordPiece than in USE's multilingual SentencePiece. So a whole exchange becomes
one chunk where it fits the model, and none is silently truncated by it.
Chunk ids derive from the document's lineage and the text, so an unchanged chunk
keeps its id and cached vector when the rest of its document changes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

from memory_pipeline.config import ChunkingConfig
from memory_pipeline.records import (
    ASSISTANT_LABEL,
    USER_LABEL,
    Chunk,
    Document,
    Kind,
    Section,
    Segment,
    Turn,
    sha256_text,
    stable_id,
)
from memory_pipeline.timeutil import naive_utc
from memory_pipeline.tokens import count_tokens, split_by_tokens

ELLIPSIS = "…"
# Context repeated at the top of every piece (a question, a heading path) may take at most this
# share of the budget, so the piece's own text always has room.
QUESTION_SHARE = 1 / 3
HEADING_SHARE = 1 / 4

Fits = Callable[[str], bool]

# Coarsest cut first: paragraphs (and markdown headings), lines, sentences, words.
_LEVELS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\n[ \t]*\n\s*|\n(?=#{1,6}\s)"), "\n\n"),
    (re.compile(r"\n"), "\n"),
    (re.compile(r"(?<=[.!?…;])\s+"), " "),
    (re.compile(r"\s+"), " "),
)
# Where a sentence starts: after . ! ? … and whitespace, or on a new line.
_SENTENCE_START = re.compile(r"(?:(?<=[.!?…])\s+|\n\s*)(?=\S)")


@dataclass(frozen=True)
class Budget:
    """How much text one chunk may hold, in the tokens ``count`` counts (the model's own)."""

    max_tokens: int
    count: Callable[[str], int] = count_tokens

    def fits(self, text: str, *, share: float = 1.0, reserve: int = 0) -> bool:
        """Within ``share`` of the budget, keeping ``reserve`` tokens free (for overlap)."""
        return self.count(text) <= int(self.max_tokens * share) - reserve


@dataclass
class _Piece:
    text: str
    turn_index: int | None = None
    page: int | None = None
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    heading: str | None = None
    created_at: datetime | None = None
    source_file: str | None = None


def chunk_document(
    doc: Document,
    config: ChunkingConfig,
    *,
    lineage: str | None = None,
    max_model_tokens: int | None = None,
    count_model_tokens: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """All chunks of one document in reading order; none empty, none over either budget.

    Chunk ids derive from ``lineage`` (default: the doc_id) and each chunk's text; the indexer
    passes the lineage of the version an edited document replaces, so its unchanged chunks keep
    their ids. ``max_model_tokens`` / ``count_model_tokens`` come from the embedder (its max
    sequence length and tokenizer): ``config.max_tokens`` is then counted in the model's tokens and
    capped by its length; without them, in cl100k tokens.
    """
    cap = config.max_tokens if max_model_tokens is None else min(config.max_tokens, max_model_tokens)
    budget = Budget(cap, count_model_tokens or count_tokens)
    if doc.kind is Kind.DIALOGUE:
        pieces = _dialogue_pieces(doc, budget)
    elif doc.kind in (Kind.ARTICLE, Kind.PROFILE):  # a profile's sections are packed like an article's
        pieces = _article_pieces(doc, budget, config.overlap_tokens)
    else:
        pieces = _lecture_pieces(doc, budget, config.lecture_window_seconds)
    return _to_chunks(doc, pieces, lineage or doc.doc_id)


def split_to_fit(text: str, fits: Fits, *, level: int = 0) -> list[str]:
    """Cut text at the coarsest boundary that makes every piece fit, packing pieces back greedily.

    Paragraphs and headings, then lines, sentences, words; tokens only as the last resort.
    """
    text = text.strip()
    if not text:
        return []
    if fits(text):
        return [text]
    return _split(text, fits, level)


def _split(text: str, fits: Fits, level: int) -> list[str]:
    """Pieces of a text that does not fit, cut at boundaries of ``level`` or finer."""
    for depth in range(level, len(_LEVELS)):
        pattern, joiner = _LEVELS[depth]
        parts = [p.strip() for p in pattern.split(text) if p.strip()]
        if len(parts) > 1:
            return pack(parts, fits, joiner, split=lambda part, finer=depth + 1: _split(part, fits, finer))
    # No whitespace is left at this depth, so token pieces join back with nothing between them.
    return pack(_split_tokens_to_fit(text, fits, count_tokens(text) // 2), fits, "")


def pack(units: list[str], fits: Fits, joiner: str, *, split: Callable[[str], list[str]] | None = None) -> list[str]:
    """Greedily join consecutive units while the result still fits.

    The longest run that fits is found by galloping and bisection, so a chunk of k units costs
    O(log k) token counts instead of k. A unit that does not fit alone goes to ``split``.
    """
    packed: list[str] = []
    start = 0
    while start < len(units):

        def run_fits(end: int) -> bool:
            return fits(joiner.join(units[start:end]))

        if split is not None and not run_fits(start + 1):
            packed.extend(split(units[start]))
            start += 1
            continue
        good, bad, step = start + 1, len(units) + 1, 1
        while good < len(units):
            probe = min(good + step, len(units))
            if not run_fits(probe):
                bad = probe
                break
            good, step = probe, step * 2
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if run_fits(middle) else (good, middle)
        packed.append(joiner.join(units[start:good]))
        start = good
    return packed


def _split_tokens_to_fit(text: str, fits: Fits, size: int) -> list[str]:
    """Halve on token boundaries until each piece fits; a single token is kept whatever its size."""
    pieces: list[str] = []
    for piece in split_by_tokens(text, max(size, 1)):
        if fits(piece) or size <= 1:
            pieces.append(piece)
        else:
            pieces.extend(_split_tokens_to_fit(piece, fits, size // 2))
    return pieces


def _context(text: str, budget: Budget, share: float, render: Callable[[str], str]) -> tuple[str, bool]:
    """``render(text)`` cut to fit ``share`` of the budget; the flag says whether it was cut."""
    if budget.fits(render(text), share=share):
        return render(text), False
    # A token is rarely over 16 characters: a safe upper bound that keeps the bisection short.
    candidate = text[: int(budget.max_tokens * share) * 16]
    low, high = 0, len(candidate)
    while low < high:
        middle = (low + high + 1) // 2
        if budget.fits(render(candidate[:middle].rstrip() + ELLIPSIS), share=share):
            low = middle
        else:
            high = middle - 1
    cut = candidate[:low].rstrip()
    return (render(cut + ELLIPSIS) if cut else ""), True


# --- dialogues ---------------------------------------------------------------------------------


def exchanges(turns: list[Turn]) -> list[tuple[int, Turn | None, list[Turn]]]:
    """(index of the user turn, the user turn, the answer turns after it), in order.

    A leading assistant turn forms an exchange without a question; a user turn with no answer
    forms one alone.
    """
    result: list[tuple[int, Turn | None, list[Turn]]] = []
    for index, turn in enumerate(turns):
        if turn.role == "user":
            result.append((index, turn, []))
        elif result:
            result[-1][2].append(turn)
        else:
            result.append((index, None, [turn]))
    return result


def exchange_text(question: str, answer: str) -> str:
    parts = [f"{USER_LABEL}: {question}" if question else "", f"{ASSISTANT_LABEL}: {answer}" if answer else ""]
    return "\n\n".join(p for p in parts if p)


def _dialogue_pieces(doc: Document, budget: Budget) -> list[_Piece]:
    pieces: list[_Piece] = []
    for turn_index, user, answers in exchanges(doc.turns):
        question = user.text.strip() if user else ""
        answer = "\n\n".join(t.text.strip() for t in answers if t.text.strip())
        when = next((t.timestamp for t in ([user] if user else []) + answers if t.timestamp), None)
        file = next((t.source_file for t in ([user] if user else []) + answers if t.source_file), None)

        def add(text: str) -> None:
            pieces.append(_Piece(text, turn_index=turn_index, created_at=when, source_file=file))

        whole = exchange_text(question, answer)
        if not whole:
            continue
        if budget.fits(whole):
            add(whole)
            continue
        context, cut = ("", False)
        if question:
            context, cut = _context(question, budget, QUESTION_SHARE, lambda q: f"{USER_LABEL}: {q}\n\n")
        if cut or not answer:
            # A question too long to repeat whole is indexed on its own too, so none of it is lost.
            user_label = f"{USER_LABEL}: "
            for part in split_to_fit(question, lambda t: budget.fits(user_label + t)):
                add(user_label + part)
        head = f"{context}{ASSISTANT_LABEL}: "
        for part in split_to_fit(answer, lambda t: budget.fits(head + t)):
            add(head + part)
    return pieces


# --- articles ----------------------------------------------------------------------------------


def _article_pieces(doc: Document, budget: Budget, overlap_tokens: int) -> list[_Piece]:
    """Sections under one heading path are packed as one run of paragraphs, with overlap."""
    # Overlap can never crowd out new text: at most half the budget.
    overlap = min(overlap_tokens, budget.max_tokens // 2)
    pieces: list[_Piece] = []
    for path, group in groupby(doc.sections, key=lambda s: tuple(h.strip() for h in s.heading_path if h.strip())):
        heading = " > ".join(path) or None
        header = _context(heading, budget, HEADING_SHARE, lambda h: f"{h}\n\n")[0] if heading else ""
        units = _paragraph_units(list(group), lambda t: budget.fits(header + t, reserve=overlap))
        for text, page in _pack_with_overlap(units, header, budget, overlap):
            pieces.append(_Piece(text, page=page, heading=heading, created_at=doc.created_at))
    return pieces


def _paragraph_units(sections: list[Section], fits: Fits) -> list[tuple[str, int | None]]:
    """Paragraphs of consecutive sections with their page, each cut to fit on its own."""
    pattern = _LEVELS[0][0]
    return [
        (piece, section.page)
        for section in sections
        for paragraph in pattern.split(section.text)
        for piece in split_to_fit(paragraph, fits, level=1)
    ]


def _pack_with_overlap(
    units: list[tuple[str, int | None]], header: str, budget: Budget, overlap: int
) -> list[tuple[str, int | None]]:
    """Greedy packing where each chunk after the first starts with the previous chunk's tail."""
    chunks: list[tuple[str, int | None]] = []
    current: list[str] = []
    page: int | None = None
    tail = ""

    def body(parts: list[str]) -> str:
        return "\n\n".join([tail, *parts] if tail else parts)

    for text, unit_page in units:
        if current and budget.fits(header + body([*current, text])):
            current.append(text)
            continue
        if current:
            chunks.append((header + body(current), page))
            tail = _overlap_tail("\n\n".join(current), overlap, budget.count)
            while tail and not budget.fits(header + body([text])):
                tail = _overlap_tail(tail, budget.count(tail) // 2, budget.count)
        current, page = [text], unit_page
    if current:
        chunks.append((header + body(current), page))
    return chunks


def _overlap_tail(text: str, tokens: int, count: Callable[[str], int]) -> str:
    """The longest suffix of text within ``tokens`` tokens that starts a sentence ('' when none fits).

    Whole sentences only: the next chunk starts with its heading and then this tail, and a tail
    from mid-sentence read as if the heading ran into it.
    """
    if tokens <= 0:
        return ""
    starts = [0, *(m.end() for m in _SENTENCE_START.finditer(text))]
    low, high = 1, len(starts)  # bisect the earliest sentence start whose suffix fits (never the whole text)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if count(text[starts[middle] :].strip()) <= tokens else (middle + 1, high)
    return text[starts[low] :].strip() if low < len(starts) else ""


# --- lectures ----------------------------------------------------------------------------------


def _lecture_pieces(doc: Document, budget: Budget, window_seconds: float) -> list[_Piece]:
    """Consecutive segments packed into windows of at most ``window_seconds`` and the budget."""
    pieces: list[_Piece] = []
    window: list[Segment] = []

    def flush() -> None:
        if not window:
            return
        speakers = list(dict.fromkeys(s.speaker for s in window if s.speaker))
        for part in split_to_fit(_window_text(window), budget.fits):
            pieces.append(
                _Piece(
                    part,
                    start=_first_time(window),
                    end=_last_time(window),
                    speaker=", ".join(speakers) or None,
                    created_at=doc.created_at,
                )
            )
        window.clear()

    for segment in doc.segments:
        if not segment.text.strip():
            continue
        if window:
            start, end = _first_time(window), _last_time([segment])
            too_long = start is not None and end is not None and end - start > window_seconds
            if too_long or not budget.fits(_window_text([*window, segment])):
                flush()
        window.append(segment)
    flush()
    return pieces


def _window_text(window: list[Segment]) -> str:
    """One line per segment; the speaker's name where the speaker changes."""
    lines = []
    previous = None
    for segment in window:
        text = segment.text.strip()
        lines.append(f"{segment.speaker}: {text}" if segment.speaker and segment.speaker != previous else text)
        previous = segment.speaker
    return "\n".join(lines)


def _first_time(segments: list[Segment]) -> float | None:
    return next((t for s in segments for t in (s.start, s.end) if t is not None), None)


def _last_time(segments: list[Segment]) -> float | None:
    return next((t for s in reversed(segments) for t in (s.end, s.start) if t is not None), None)


# --- ids ---------------------------------------------------------------------------------------


def _to_chunks(doc: Document, pieces: list[_Piece], lineage: str) -> list[Chunk]:
    """Chunks with ids from (lineage, text, n-th occurrence of that text in the document)."""
    seen: Counter[str] = Counter()
    chunks = []
    for piece in pieces:
        text = piece.text.strip()
        if not text:
            continue
        text_hash = sha256_text(text)
        occurrence = seen[text_hash]
        seen[text_hash] += 1
        chunks.append(
            Chunk(
                chunk_id=stable_id(lineage, text_hash, str(occurrence)),
                doc_id=doc.doc_id,
                lineage=lineage,
                kind=doc.kind,
                title=doc.title,
                source_path=doc.source_path,
                text=text,
                text_hash=text_hash,
                ordinal=len(chunks),
                turn_index=piece.turn_index,
                page=piece.page,
                start=piece.start,
                end=piece.end,
                speaker=piece.speaker,
                heading=piece.heading,
                created_at=naive_utc(piece.created_at or doc.created_at),
                language=doc.language,
                source_file=piece.source_file,
            )
        )
    return chunks
