"""Short human-readable renderings shared by the CLI, the scoring explanations and the Dagster UI."""

from __future__ import annotations


def one_line(text: str | None, limit: int) -> str:
    """The text on one line (whitespace collapsed), cut to ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def clock(seconds: float | None) -> str:
    """A transcript timestamp as hh:mm:ss ('?' when unknown)."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
