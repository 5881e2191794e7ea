"""Small helpers that turn core figures into Dagster metadata a person can read in the UI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from memory_pipeline.display import one_line


def markdown_table(
    rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None, *, limit: int = 20, cell_chars: int = 80
) -> dg.MetadataValue:
    """A markdown table of the first ``limit`` rows (cells flattened to one line, clipped to ``cell_chars``)."""
    rows = list(rows)[:limit]
    if not rows:
        return dg.MetadataValue.md("_(none)_")
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c), cell_chars) for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def counts_table(counts: Mapping[str, int], key: str = "name", value: str = "count") -> dg.MetadataValue:
    return markdown_table([{key: k, value: v} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])], limit=100)


def histogram(bins) -> dg.MetadataValue:
    """Score distribution bins (lo, hi, count) as a text bar chart, readable in the UI without plotting."""
    peak = max((b.count for b in bins), default=0) or 1
    lines = [f"{b.lo:4.2f}-{b.hi:4.2f} | {'#' * round(30 * b.count / peak):<30} {b.count}" for b in bins]
    return dg.MetadataValue.md("```\n" + "\n".join(lines) + "\n```")


def _cell(value: object, limit: int) -> str:
    return one_line(str("" if value is None else value), limit).replace("|", "\\|")
