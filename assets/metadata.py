"""Small helpers that turn core figures into Dagster metadata a person can read in the UI without clicking.

The UI draws table metadata in place and markdown under 1,000 characters in place; longer markdown and
JSON sit behind a "[Show ...]" click. So figures go in tables, and the score histogram is a small PNG
(drawn here with the standard library: no plotting package for one image) inside short markdown.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Mapping, Sequence

import dagster as dg

from memory_pipeline.display import one_line

_COLUMN_TYPES = {bool: "bool", int: "int", float: "float"}


def table(
    rows: Sequence[Mapping[str, object]], columns: Sequence[str], *, limit: int = 20, cell_chars: int = 80
) -> dg.MetadataValue:
    """The first ``limit`` rows as table metadata; text cells flattened to one line and clipped to ``cell_chars``."""
    rows = list(rows)[:limit]
    records = [dg.TableRecord({c: _cell(row.get(c), cell_chars) for c in columns}) for row in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, _column_type(rows, c)) for c in columns])
    return dg.MetadataValue.table(records, schema=schema)


def counts_table(counts: Mapping[str, int], key: str = "name", value: str = "count") -> dg.MetadataValue:
    """One row per name, largest count first."""
    return table(
        [{key: k, value: v} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])], [key, value], limit=100
    )


def _cell(value: object, limit: int) -> str | int | float | bool | None:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return one_line(str(value), limit)


def _column_type(rows: Sequence[Mapping[str, object]], column: str) -> str:
    """int, float or bool when every non-empty cell is one; otherwise string."""
    kinds = {type(row.get(column)) for row in rows if row.get(column) is not None}
    if kinds == {int, float}:
        return "float"
    return _COLUMN_TYPES.get(next(iter(kinds)), "string") if len(kinds) == 1 else "string"


# Histogram image: zone colours match the legend's squares (cache yellow, rag blue, lora green).
_WIDTH, _HEIGHT, _BAR_GAP = 300, 90, 3
_PALETTE = [(255, 255, 255), (244, 197, 66), (59, 130, 246), (34, 197, 94), (51, 51, 51), (170, 170, 170)]
_BACKGROUND, _CACHE, _RAG, _LORA, _THRESHOLD, _AXIS = range(6)


def histogram(bins, *, rag_threshold: float, lora_threshold: float) -> dg.MetadataValue:
    """Score distribution over 0..1 as a bar chart with the two tier thresholds drawn as dashed lines.

    Bars are coloured by the tier zone a score falls in (below ``rag_threshold``: cache; up to
    ``lora_threshold``: rag; above: lora when routed to an adapter, else rag), so a person sees at
    a glance how many items each threshold change would move.
    """
    counts = [b.count for b in bins]
    png = _histogram_png(counts, rag_threshold, lora_threshold)
    legend = [
        f"score 0 → 1, bins of {1 / max(len(counts), 1):g}",
        f"yellow: cache, below {rag_threshold:g}",
        f"blue: rag, from {rag_threshold:g}",
        f"green: lora (if routed), from {lora_threshold:g}",
        "items per bin: " + " ".join(str(c) for c in counts),
    ]
    image = f"![score histogram](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
    return dg.MetadataValue.md("\n\n".join([image, *legend]))


def _histogram_png(counts: Sequence[int], rag_threshold: float, lora_threshold: float) -> bytes:
    peak = max(counts, default=0) or 1
    width_per_bin = _WIDTH / max(len(counts), 1)
    heights = [0 if c == 0 else max(1, round((_HEIGHT - 2) * c / peak)) for c in counts]
    lines = {round(t * (_WIDTH - 1)) for t in (rag_threshold, lora_threshold)}
    rows = []
    for y in range(_HEIGHT):
        row = bytearray([0])  # filter type 0 for each scanline
        for x in range(_WIDTH):
            column = min(int(x / width_per_bin), len(counts) - 1)
            in_bar = x - column * width_per_bin < width_per_bin - _BAR_GAP and 0 <= _HEIGHT - 2 - y < heights[column]
            if x in lines and y % 6 < 4:
                row.append(_THRESHOLD)
            elif y == _HEIGHT - 1:
                row.append(_AXIS)
            elif in_bar:
                score = x / (_WIDTH - 1)
                row.append(_CACHE if score < rag_threshold else _RAG if score < lora_threshold else _LORA)
            else:
                row.append(_BACKGROUND)
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", _WIDTH, _HEIGHT, 8, 3, 0, 0, 0)  # 8-bit palette image
    palette = b"".join(bytes(rgb) for rgb in _PALETTE)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"PLTE", palette)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
