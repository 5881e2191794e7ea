"""Token-aware chunking: documents -> the pieces that are embedded, indexed and searched.

Each kind is cut where its meaning breaks: a dialogue per exchange (question + answer), an
article per section and paragraph, a lecture per time window. Budgets are counted in cl100k
tokens and, when the embedder says so, in the model's own tokens too, so no chunk is silently
truncated by the model (Russian text takes many more WordPiece tokens than cl100k tokens).
Chunk ids derive from the text, so an unchanged chunk keeps its id and cached vector.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from memory_pipeline.config import ChunkingConfig
from memory_pipeline.records import Chunk, Document, Kind, Turn, sha256_text, stable_id
from memory_pipeline.tokens import count_tokens, encoding, split_by_tokens, truncate_tokens

Fits = Callable[[str], bool]
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n|\n(?=#{1,6}\s)")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=\S)")
USER_LABEL, ASSISTANT_LABEL = "User", "Assistant"


def chunk_document(
    doc: Document,
    config: ChunkingConfig,
    *,
    max_model_tokens: int | None = None,
    count_model_tokens: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """All chunks of one document, in reading order, never empty and never over budget."""
    budget = config.max_tokens

    def fits(text: str) -> bool:
        if count_tokens(text) > budget:
            return False
        return count_model_tokens is None or max_model_tokens is None or count_model_tokens(text) <= max_model_tokens

    if doc.kind is Kind.DIALOGUE:
        pieces = _dialogue_pieces(doc.turns, fits, budget)
    elif doc.kind is Kind.ARTICLE:
        pieces = _article_pieces(doc, fits, budget, config.overlap_tokens)
    else:
        pieces = _lecture_pieces(doc, fits, budget, config.lecture_window_seconds)
    return _to_chunks(doc, pieces)


def chunk_documents(docs: Iterable[Document], config: ChunkingConfig, **kwargs) -> Iterator[Chunk]:
    for doc in docs:
        yield from chunk_document(doc, config, **kwargs)


def split_to_fit(text: str, fits: Fits, budget: int) -> list[str]:
    """Paragraphs (and headings), then sentences, then tokens: the coarsest cut that fits."""
    text = text.strip()
    if not text:
        return []
    if fits(text):
        return [text]
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if len(paragraphs) > 1:
        return pack([piece for p in paragraphs for piece in split_to_fit(p, fits, budget)], fits, "\n\n")
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    if len(sentences) > 1:
        return pack([piece for s in sentences for piece in split_to_fit(s, fits, budget)], fits, " ")
    return _split_tokens_to_fit(text, fits, budget)


def pack(units: list[str], fits: Fits, joiner: str) -> list[str]:
    """Greedily join consecutive units while the result still fits."""
    packed: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}{joiner}{unit}" if current else unit
        if current and not fits(candidate):
            packed.append(current)
            current = unit
        else:
            current = candidate
    if current:
        packed.append(current)
    return packed


def _split_tokens_to_fit(text: str, fits: Fits, budget: int) -> list[str]:
    size = budget
    while size > 1:
        pieces = [p.strip() for p in split_by_tokens(text, size) if p.strip()]
        if all(fits(p) for p in pieces):
            return pieces
        size = size * 2 // 3
    return [p for p in split_by_tokens(text, 1) if p.strip()]


# --- dialogues ---------------------------------------------------------------------------------


def exchanges(turns: list[Turn]) -> list[tuple[int, Turn | None, list[Turn]]]:
    """(index of the user turn, the user turn, the answer turns that follow it) in order."""
    result: list[tuple[int, Turn | None, list[Turn]]] = []
    for index, turn in enumerate(turns):
        if turn.role == "user" or not result:
            result.append((index, turn if turn.role == "user" else None, [] if turn.role == "user" else [turn]))
        else:
            result[-1][2].append(turn)
    return result


def _dialogue_pieces(turns: list[Turn], fits: Fits, budget: int) -> list[dict]:
    pieces = []
    for turn_index, user, answers in exchanges(turns):
        question = user.text.strip() if user else ""
        answer = "\n\n".join(t.text.strip() for t in answers if t.text.strip())
        when = (user or answers[0]).timestamp
        whole = _exchange_text(question, answer)
        if fits(whole):
            pieces.append({"text": whole, "turn_index": turn_index, "created_at": when})
            continue
        prefix = _question_prefix(question, fits, budget)
        if not answer:
            for part in split_to_fit(question, fits, budget):
                pieces.append({"text": f"{USER_LABEL}: {part}", "turn_index": turn_index, "created_at": when})
            continue
        label = f"{ASSISTANT_LABEL}: "
        for part in split_to_fit(answer, lambda t: fits(prefix + label + t), budget):
            pieces.append({"text": prefix + label + part, "turn_index": turn_index, "created_at": when})
    return pieces


def _exchange_text(question: str, answer: str) -> str:
    parts = []
    if question:
        parts.append(f"{USER_LABEL}: {question}")
    if answer:
        parts.append(f"{ASSISTANT_LABEL}: {answer}")
    return "\n\n".join(parts)


def _question_prefix(question: str, fits: Fits, budget: int) -> str:
    """The user's question as context above each piece of a long answer, cut to leave room for the answer."""
    if not question:
        return ""
    limit = budget // 3
    while limit > 4:
        prefix = f"{USER_LABEL}: {truncate_tokens(question, limit)}\n\n"
        if fits(prefix + f"{ASSISTANT_LABEL}: " + "x " * (budget // 3)):
            return prefix
        limit //= 2
    return ""


# --- articles ----------------------------------------------------------------------------------


def _article_pieces(doc: Document, fits: Fits, budget: int, overlap_tokens: int) -> list[dict]:
    pieces = []
    for section in doc.sections:
        heading = " > ".join(h for h in section.heading_path if h) or None
        header = f"{heading}\n\n" if heading else ""
        body_parts = split_to_fit(section.text, lambda t: fits(header + t), budget)
        previous_tail = ""
        for part in body_parts:
            text = header + (f"{previous_tail} {part}".strip() if previous_tail else part)
            if not fits(text):
                text = header + part
            pieces.append({"text": text, "page": section.page, "heading": heading, "created_at": doc.created_at})
            previous_tail = _tail(part, overlap_tokens)
    return pieces


def _tail(text: str, tokens: int) -> str:
    if tokens <= 0:
        return ""
    ids = encoding().encode(text, disallowed_special=())
    return encoding().decode(ids[-tokens:]).strip() if len(ids) > tokens else ""


# --- lectures ----------------------------------------------------------------------------------


def _lecture_pieces(doc: Document, fits: Fits, budget: int, window_seconds: float) -> list[dict]:
    pieces: list[dict] = []
    window: list = []

    def flush() -> None:
        if not window:
            return
        text = "\n".join(_segment_line(s) for s in window)
        speakers = list(dict.fromkeys(s.speaker for s in window if s.speaker))
        base = {"start": window[0].start, "end": window[-1].end, "speaker": ", ".join(speakers) or None, "created_at": doc.created_at}
        for part in split_to_fit(text, fits, budget):
            pieces.append({"text": part, **base})
        window.clear()

    for segment in doc.segments:
        if not segment.text.strip():
            continue
        if window:
            span_ok = segment.end is None or window[0].start is None or segment.end - window[0].start <= window_seconds
            if not span_ok or not fits("\n".join(_segment_line(s) for s in [*window, segment])):
                flush()
        window.append(segment)
    flush()
    return pieces


def _segment_line(segment) -> str:
    return f"{segment.speaker}: {segment.text.strip()}" if segment.speaker else segment.text.strip()


# --- ids ---------------------------------------------------------------------------------------


def _to_chunks(doc: Document, pieces: list[dict]) -> list[Chunk]:
    seen: Counter[str] = Counter()
    chunks = []
    for ordinal, piece in enumerate(p for p in pieces if p["text"].strip()):
        text = piece.pop("text").strip()
        text_hash = sha256_text(text)
        n = seen[text_hash]
        seen[text_hash] += 1
        created = piece.pop("created_at", None) or doc.created_at
        chunks.append(
            Chunk(
                chunk_id=stable_id(doc.doc_id, text_hash, str(n)),
                doc_id=doc.doc_id,
                kind=doc.kind,
                title=doc.title,
                source_path=doc.source_path,
                text=text,
                text_hash=text_hash,
                ordinal=ordinal,
                created_at=_naive(created),
                language=doc.language,
                **piece,
            )
        )
    return chunks


def _naive(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    from datetime import UTC

    return value.astimezone(UTC).replace(tzinfo=None)
