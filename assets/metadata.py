"""Small helpers that turn core figures into Dagster metadata a person can read in the UI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None, *, limit: int = 20) -> dg.MetadataValue:
    """A markdown table of the first ``limit`` rows (cells flattened to one line, clipped)."""
    rows = list(rows)[:limit]
    if not rows:
        return dg.MetadataValue.md("_(none)_")
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def counts_table(counts: Mapping[str, int], key: str = "name", value: str = "count") -> dg.MetadataValue:
    return markdown_table([{key: k, value: v} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])], limit=100)


def histogram(values: Iterable[float], *, bins: int = 10, lo: float = 0.0, hi: float = 1.0) -> dg.MetadataValue:
    """A text histogram of scores in [lo, hi]: readable in the UI without plotting."""
    values = list(values)
    counts = [0] * bins
    for v in values:
        index = min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))
        counts[index] += 1
    peak = max(counts) or 1
    lines = ["```"]
    for i, c in enumerate(counts):
        left = lo + (hi - lo) * i / bins
        lines.append(f"{left:4.2f} | {'#' * round(30 * c / peak):<30} {c}")
    lines.append("```")
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value: object) -> str:
    text = " ".join(str("" if value is None else value).split()).replace("|", "\\|")
    return text if len(text) <= 80 else text[:79] + "…"
