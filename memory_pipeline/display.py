"""Short human-readable renderings shared by the CLI, the scoring explanations and the Dagster UI."""

from __future__ import annotations

from memory_pipeline.records import ASSISTANT_LABEL, USER_LABEL


def one_line(text: str | None, limit: int) -> str:
    """The text on one line (whitespace collapsed), cut to ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def hit_preview(text: str | None, limit: int, *, question: int = 100) -> str:
    """A hit's text on one line; a dialogue chunk's question cut to ``question`` characters.

    Every chunk of a long exchange repeats the question at its top, so two hits from one exchange
    would otherwise show the same opening: cut short, the question leaves room for the answer part
    that this chunk holds.
    """
    asked, sep, answer = (text or "").partition(f"\n\n{ASSISTANT_LABEL}: ")
    if not sep or not asked.startswith(f"{USER_LABEL}: "):
        return one_line(text, limit)
    return one_line(f"{one_line(asked, question)} {ASSISTANT_LABEL}: {answer}", limit)


def clock(seconds: float | None) -> str:
    """A transcript timestamp as hh:mm:ss ('?' when unknown)."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def position(
    *,
    turn_index: int | None = None,
    page: int | None = None,
    start: float | None = None,
    end: float | None = None,
    heading: str | None = None,
) -> str:
    """Where a piece sits in its document, as a person looks for it.

    For example 'turn 3', 'p. 4 · Intro > Setup', '00:01:05–00:02:10'.
    """
    parts = []
    if turn_index is not None:
        parts.append(f"turn {turn_index}")
    if page is not None:
        parts.append(f"p. {page}")
    if start is not None:
        parts.append(f"{clock(start)}–{clock(end if end is not None else start)}")
    if heading:
        parts.append(heading)
    return " · ".join(parts)


def position_of(piece: object) -> str:
    """``position`` of anything carrying those fields (a search hit, a scored item's unit)."""
    return position(**{name: getattr(piece, name, None) for name in ("turn_index", "page", "start", "end", "heading")})
