"""The chunk table in LanceDB: rows, vectors and the stemmed full-text column, one table per model.

LanceDB is the source of truth for chunks; FAISS is derived from it. A document's chunks are
replaced in a single merge-insert commit (new rows in, its other rows and those of the version
it replaces out), so a reader or a crash never sees a document half re-chunked. Each row keeps
its document's lineage, the key chunk ids derive from (see ``index.sync.plan_lineages``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import numpy as np

from memory_pipeline.errors import StoreError
from memory_pipeline.index.embedding import model_slug
from memory_pipeline.index.fts import stem_for_fts
from memory_pipeline.records import Chunk

_ID_BATCH = 500
COMPACT_FRAGMENTS = 20
"""Fragments (one per commit) a table may have before compaction merges them; LanceDB's own rule of
thumb is to optimize after about 20 modifications."""
ROW_COLUMNS = [
    "row_id", "chunk_id", "doc_id", "kind", "title", "source_path", "text", "ordinal",
    "turn_index", "page", "start", "end", "speaker", "heading", "created_at", "language", "source_file",
]  # fmt: skip


def _schema(dimension: int):
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("row_id", pa.int64(), nullable=False),
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("doc_key", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("title", pa.string()),
            pa.field("source_path", pa.string()),
            pa.field("text", pa.string()),
            pa.field("fts_text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
            pa.field("ordinal", pa.int32()),
            pa.field("turn_index", pa.int32()),
            pa.field("page", pa.int32()),
            pa.field("start", pa.float64()),
            pa.field("end", pa.float64()),
            pa.field("speaker", pa.string()),
            pa.field("heading", pa.string()),
            pa.field("created_at", pa.timestamp("us")),
            pa.field("language", pa.string()),
            # Last, where add_columns puts them in a table written before they existed.
            pa.field("lineage", pa.string()),
            pa.field("source_file", pa.string()),
        ]
    )


def _quoted(values: Sequence[str]) -> str:
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


class ChunkStore:
    """Chunks of one embedding model in a LanceDB table ``chunks_<model slug>``."""

    def __init__(self, uri: str | Path, model_id: str, dimension: int | None = None):
        """``dimension`` is needed only to create the table; readers may open an existing one without it."""
        import lancedb

        self.uri = str(uri)
        self.model_id = model_id
        self.table_name = f"chunks_{model_slug(model_id)}"
        self._db = lancedb.connect(self.uri)
        self.dimension = dimension
        self._fts_ready = False

    @cached_property
    def table(self):
        if self.exists():
            table = self._db.open_table(self.table_name)
            self.dimension = table.schema.field("vector").type.list_size
            return table
        if self.dimension is None:
            raise StoreError(f"{self.uri}: no chunk table for model {self.model_id!r} yet; index first")
        return self._db.create_table(self.table_name, schema=_schema(self.dimension), exist_ok=True)

    def exists(self) -> bool:
        return self.table_name in self._db.list_tables().tables

    def count(self) -> int:
        return self.table.count_rows() if self.exists() else 0

    def latest_version(self) -> int:
        """Move to the newest committed version (an indexer may have written since) and return its number."""
        self.table.checkout_latest()
        return self.table.version

    def indexed_documents(self) -> dict[str, str]:
        """doc_id -> the document key its chunks were built from (compared with the docstore's)."""
        return {row["doc_id"]: row["doc_key"] for row in self.rows(["doc_id", "doc_key"])}

    def other_model_documents(self) -> dict[str, set[str]]:
        """Chunk tables of other embedding models in this database -> the documents they hold.

        What a model switch has to carry over: the new model's table is filled from the document
        store, and these sets show whether every document the old model had indexed arrived.
        """
        tables = [t for t in self._db.list_tables().tables if t.startswith("chunks_") and t != self.table_name]
        found = {}
        for name in tables:
            doc_ids = self._db.open_table(name).search().select(["doc_id"]).limit(None).to_arrow().column("doc_id")
            found[name] = set(doc_ids.to_pylist())
        return found

    def ensure_columns(self) -> None:
        """Give a table written before them the lineage column, filled with doc_id, and source_file (empty).

        Those rows' chunk ids derive from their doc_id, the lineage a document starts with, so
        every id stays valid and nothing is re-chunked.
        """
        if self.exists() and "lineage" not in self.table.schema.names:
            self.table.add_columns({"lineage": "doc_id"})
        if self.exists() and "source_file" not in self.table.schema.names:
            self.table.add_columns({"source_file": "CAST(NULL AS STRING)"})

    @property
    def row_columns(self) -> list[str]:
        """ROW_COLUMNS this table has (one not yet given its newer columns by ``ensure_columns`` lacks some)."""
        names = set(self.table.schema.names)
        return [c for c in ROW_COLUMNS if c in names]

    def replace_documents(
        self,
        doc_keys: dict[str, str],
        chunks: Sequence[Chunk],
        vectors: dict[str, np.ndarray],
        *,
        replaced: Sequence[str] = (),
    ) -> None:
        """One atomic commit: these documents' chunks become exactly ``chunks`` (documents may end up empty).

        The ``replaced`` documents (earlier versions of these) leave in the same commit; their
        chunks that the new versions share keep their rows, now under the new doc_id.
        """
        (
            self.table.merge_insert("chunk_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(f"doc_id IN ({_quoted(sorted({*doc_keys, *replaced}))})")
            .execute(self._arrow(doc_keys, chunks, vectors))
        )

    def add_documents(self, doc_keys: dict[str, str], chunks: Sequence[Chunk], vectors: dict[str, np.ndarray]) -> None:
        """One atomic commit appending the chunks of documents that have no rows here yet.

        A plain append costs the same on any table, where a merge-insert joins the whole table: on
        a 50k-chunk table, 25 pools cost 2.9 s merged against 0.8 s appended, and the gap grows with
        the table. Only for a single writer (``sync_index`` holds the index lock): two appends of
        one document would both land.
        """
        self.table.add(self._arrow(doc_keys, chunks, vectors))

    def _arrow(self, doc_keys: dict[str, str], chunks: Sequence[Chunk], vectors: dict[str, np.ndarray]):
        import pyarrow as pa

        schema = _schema(self.dimension)
        rows = [_row(c, doc_keys[c.doc_id]) for c in chunks]
        matrix = np.array([vectors[c.text_hash] for c in chunks], dtype=np.float32).reshape(-1, self.dimension)
        # The vector column straight from the matrix: no 512 Python floats per row on the way to Arrow.
        vector_column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), self.dimension)
        data = pa.Table.from_pylist(rows, schema=schema.remove(schema.get_field_index("vector")))
        return data.add_column(schema.get_field_index("vector"), schema.field("vector"), vector_column)

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        ids = sorted(doc_ids)
        for start in range(0, len(ids), _ID_BATCH):
            self.table.delete(f"doc_id IN ({_quoted(ids[start : start + _ID_BATCH])})")

    def chunk_ids(self, doc_ids: Sequence[str]) -> set[str]:
        return {r["chunk_id"] for r in self.rows(["chunk_id"], doc_ids=doc_ids)}

    def lineages(self, doc_ids: Sequence[str]) -> dict[str, dict]:
        """doc_id -> lineage, kind and source path of those of ``doc_ids`` that have chunks here."""
        return {r["doc_id"]: r for r in self.rows(["doc_id", "lineage", "kind", "source_path"], doc_ids=doc_ids)}

    def lineage_owners(self, lineages: Sequence[str]) -> dict[str, str]:
        """lineage -> the document whose chunks carry it, for those of ``lineages`` in use."""
        return {r["lineage"]: r["doc_id"] for r in self._rows_in(["doc_id", "lineage"], "lineage", lineages)}

    def row_ids(self) -> np.ndarray:
        if not self.exists():
            return np.array([], dtype=np.int64)
        column = self.table.search().select(["row_id"]).limit(None).to_arrow().column("row_id")
        return column.to_numpy().astype(np.int64)

    def iter_vectors(
        self, row_ids: Sequence[int] | None = None, *, batch: int = 20_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in batches: for building or patching the FAISS mirror without loading all at once."""
        if row_ids is None:
            reader = self.table.search().select(["row_id", "vector"]).limit(None).to_batches(batch)
            for record_batch in reader:
                yield _ids_and_vectors(record_batch, self.dimension)
            return
        ids = list(row_ids)
        for start in range(0, len(ids), _ID_BATCH):
            part = ids[start : start + _ID_BATCH]
            table = (
                self.table.search()
                .where(f"row_id IN ({','.join(map(str, part))})")
                .select(["row_id", "vector"])
                .limit(None)
                .to_arrow()
            )
            yield _ids_and_vectors(table, self.dimension)

    def get_rows(self, row_ids: Sequence[int]) -> dict[int, dict]:
        found: dict[int, dict] = {}
        ids = [int(i) for i in row_ids]
        for start in range(0, len(ids), _ID_BATCH):
            part = ids[start : start + _ID_BATCH]
            query = (
                self.table.search()
                .where(f"row_id IN ({','.join(map(str, part))})")
                .select(self.row_columns)
                .limit(None)
            )
            for row in query.to_arrow().to_pylist():
                found[row["row_id"]] = row
        return found

    def rows(
        self, columns: Sequence[str], where: str | None = None, *, doc_ids: Sequence[str] | None = None
    ) -> list[dict]:
        """Selected columns of all rows, or of a filter / some documents; [] before the table exists."""
        if not self.exists():
            return []
        if doc_ids is not None:
            return self._rows_in(columns, "doc_id", doc_ids)
        query = self.table.search().select(list(columns)).limit(None)
        if where:
            query = query.where(where)
        rows = query.to_arrow().to_pylist()
        if "vector" in columns:
            for row in rows:
                row["vector"] = np.asarray(row["vector"], dtype=np.float32)
        return rows

    def _rows_in(self, columns: Sequence[str], column: str, values: Sequence[str]) -> list[dict]:
        """Selected columns of the rows whose string ``column`` is one of ``values``, queried in batches."""
        ordered = sorted(set(values))
        return [
            row
            for start in range(0, len(ordered), _ID_BATCH)
            for row in self.rows(columns, f"{column} IN ({_quoted(ordered[start : start + _ID_BATCH])})")
        ]

    def vector_search(
        self, vector: np.ndarray, k: int, *, kind: str | None = None, where: str | None = None
    ) -> list[dict]:
        query = (
            self.table.search(vector, vector_column_name="vector")
            .distance_type("cosine")
            .select([*self.row_columns, "_distance"])
            .limit(k)
        )
        if kind or where:
            query = query.where(_conditions(kind, where), prefilter=True)
        return cosine_scored(query.to_arrow().to_pylist())

    def fts_search(self, query: str, k: int, *, kind: str | None = None, where: str | None = None) -> list[dict]:
        """BM25 over the stemmed column; the query is stemmed the same way."""
        stemmed = stem_for_fts(query)
        if not stemmed or not self.exists():
            return []
        if not self._fts_ready:
            self.ensure_fts_index()
        search = (
            self.table.search(stemmed, query_type="fts", fts_columns="fts_text")
            .select([*self.row_columns, "_score"])
            .limit(k)
        )
        if kind or where:
            search = search.where(_conditions(kind, where), prefilter=True)
        return search.to_arrow().to_pylist()

    def ensure_fts_index(self) -> bool:
        """Build the indexes where the full-text one is missing; True when they were built now."""
        built = not any(index.name == "fts_text_idx" for index in self.table.list_indices())
        if built:
            self.build_indexes()
        self._fts_ready = self.count() > 0
        return built

    def build_indexes(self) -> None:
        """Full-text index on the stemmed column (whitespace tokens, no further stemming) and id indexes."""
        if self.count() == 0:
            return
        self.table.create_fts_index(
            "fts_text",
            replace=True,
            use_tantivy=False,
            base_tokenizer="whitespace",
            lower_case=False,
            stem=False,
            remove_stop_words=False,
            ascii_folding=False,
            name="fts_text_idx",
        )
        self.table.create_scalar_index("row_id", replace=True)
        self.table.create_scalar_index("doc_id", replace=True)

    def optimize(self) -> None:
        """Compact fragments, fold new rows into the indexes, drop old versions (kept a day for readers).

        Not right after the indexes were first built over a table of few fragments (a first index):
        they already cover every row, there is no old version to drop, and compaction would only
        rewrite the whole table to merge a handful of files.
        """
        if self.ensure_fts_index() and self.table.stats()["fragment_stats"]["num_fragments"] <= COMPACT_FRAGMENTS:
            return
        self.table.optimize(cleanup_older_than=timedelta(days=1))


def _row(chunk: Chunk, doc_key: str) -> dict:
    return {
        "row_id": chunk.row_id,
        "chunk_id": chunk.chunk_id,
        "doc_id": chunk.doc_id,
        "doc_key": doc_key,
        "kind": chunk.kind.value,
        "title": chunk.title,
        "source_path": chunk.source_path,
        "text": chunk.text,
        "fts_text": stem_for_fts(f"{chunk.title}\n{chunk.text}"),
        "ordinal": chunk.ordinal,
        "turn_index": chunk.turn_index,
        "page": chunk.page,
        "start": chunk.start,
        "end": chunk.end,
        "speaker": chunk.speaker,
        "heading": chunk.heading,
        "created_at": chunk.created_at,
        "language": chunk.language,
        "lineage": chunk.lineage,
        "source_file": chunk.source_file,
    }


def _ids_and_vectors(table, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    ids = table.column("row_id").to_numpy().astype(np.int64)
    flat = (
        table.column("vector").combine_chunks().values.to_numpy()
        if hasattr(table.column("vector"), "combine_chunks")
        else table.column("vector").values.to_numpy()
    )
    return ids, flat.reshape(-1, dimension).astype(np.float32)


def cosine_scored(rows: list[dict]) -> list[dict]:
    """Vector hits with LanceDB's cosine ``_distance`` turned into the similarity ``_score`` hits carry."""
    for row in rows:
        row["_score"] = 1.0 - float(row.pop("_distance"))
    return rows


def _conditions(kind: str | None, where: str | None) -> str:
    """A kind filter and an extra SQL condition (a time span) joined for LanceDB's prefilter."""
    return " AND ".join(part for part in (f"kind = '{kind}'" if kind else "", f"({where})" if where else "") if part)
