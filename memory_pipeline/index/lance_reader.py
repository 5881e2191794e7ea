"""The search side of the chunk table, read with ``lance`` (pylance) instead of ``lancedb``.

A search in a fresh process (the CLI with no service up) paid ~1.9 CPU-s just to import lancedb,
half of it its generated REST-catalog client, which a local table never uses; ``import lance``
costs ~0.5 (bench/results/cold_search.json). Both run the same Lance engine over the same files:
the full-text index is Lance's own inverted index (``use_tantivy=False``), so BM25 scores, vector
distances and filters come out identical (tests/test_search.py compares them). Writing, index
building and anything not on a local disk stay with ``ChunkStore``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from memory_pipeline.index.embedding import model_slug
from memory_pipeline.index.fts import stem_for_fts
from memory_pipeline.index.lancedb_store import _ID_BATCH, ROW_COLUMNS, ChunkStore, _conditions, cosine_scored

_FTS_INDEX = "fts_text_idx"


def open_for_search(uri: str | Path, model_id: str, dimension: int | None = None) -> ChunkReader | ChunkStore:
    """A ``ChunkReader`` for a table on the local disk, else (object store, LanceDB Cloud) a ``ChunkStore``."""
    if urlparse(str(uri)).scheme in ("", "file"):
        return ChunkReader(uri, model_id)
    return ChunkStore(uri, model_id, dimension)


class ChunkReader:
    """Read-only view of ``chunks_<model slug>`` that ``Searcher`` queries; same methods as ``ChunkStore``'s reads."""

    def __init__(self, uri: str | Path, model_id: str):
        self.uri = str(uri)
        path = urlparse(self.uri).path if self.uri.startswith("file:") else self.uri
        self.model_id = model_id
        self.table_name = f"chunks_{model_slug(model_id)}"
        self.path = os.path.join(path, f"{self.table_name}.lance")
        self._dataset = None
        self._fts_ready = False

    @property
    def dataset(self):
        if self._dataset is None:
            import lance

            self._dataset = lance.dataset(self.path)
        return self._dataset

    def exists(self) -> bool:
        return os.path.isdir(os.path.join(self.path, "_versions"))

    def latest_version(self) -> int:
        """Move to the newest committed version (an indexer may have written since) and return its number."""
        if self._dataset is not None and self._dataset.latest_version != self._dataset.version:
            self._dataset = None
        return self.dataset.version

    def count(self) -> int:
        return self.dataset.count_rows() if self.exists() else 0

    @property
    def row_columns(self) -> list[str]:
        names = set(self.dataset.schema.names)
        return [c for c in ROW_COLUMNS if c in names]

    def rows(self, columns: Sequence[str], where: str | None = None) -> list[dict]:
        if not self.exists():
            return []
        rows = self.dataset.to_table(columns=list(columns), filter=where).to_pylist()
        if "vector" in columns:
            for row in rows:
                row["vector"] = np.asarray(row["vector"], dtype=np.float32)
        return rows

    def get_rows(self, row_ids: Sequence[int]) -> dict[int, dict]:
        ids = [int(i) for i in row_ids]
        found: dict[int, dict] = {}
        for start in range(0, len(ids), _ID_BATCH):
            for row in self.rows(self.row_columns, f"row_id IN ({','.join(map(str, ids[start : start + _ID_BATCH]))})"):
                found[row["row_id"]] = row
        return found

    def vector_search(
        self, vector: np.ndarray, k: int, *, kind: str | None = None, where: str | None = None
    ) -> list[dict]:
        nearest = {"column": "vector", "q": np.asarray(vector, dtype=np.float32), "k": k, "metric": "cosine"}
        condition = _conditions(kind, where) if kind or where else None
        table = self.dataset.to_table(
            columns=[*self.row_columns, "_distance"], nearest=nearest, filter=condition, prefilter=True
        )
        return cosine_scored(table.to_pylist())

    def fts_search(self, query: str, k: int, *, kind: str | None = None, where: str | None = None) -> list[dict]:
        """BM25 over the stemmed column, as ``ChunkStore.fts_search``; a table without the index gets it built first."""
        stemmed = stem_for_fts(query)
        if not stemmed or not self.exists():
            return []
        if not self._fts_ready:
            if not any(index.name == _FTS_INDEX for index in self.dataset.describe_indices()):
                ChunkStore(self.uri, self.model_id).ensure_fts_index()
                self._dataset = None
            self._fts_ready = self.count() > 0
        condition = _conditions(kind, where) if kind or where else None
        table = self.dataset.to_table(
            columns=[*self.row_columns, "_score"],
            full_text_query={"query": stemmed, "columns": ["fts_text"]},
            filter=condition,
            prefilter=True,
            limit=k,
        )
        return table.to_pylist()
