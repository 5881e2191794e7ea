"""The document store: every normalized document, in LanceDB tables under ``storage/documents``.

LanceDB (rather than loose Parquet files) because it gives atomic merge-insert and delete
commits on disk with no server, so a crash mid-ingest leaves the last committed state, and
the later stages read it with the same library they use for chunks. One table per kind, so
the three ingest assets can run in parallel without write conflicts. The whole record is kept
as JSON in ``body``; the other columns are what the UI, filters and change detection read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from memory_pipeline.records import Document, Kind, sha256_text
from memory_pipeline.timeutil import naive_utc

_BATCH = 500
_SCAN_SHARE = 16
"""Read a whole table rather than query it by ids when asked for more than 1/16 of its rows: a query
costs about 60 µs per id asked, a read-through about 4 µs per row."""


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("kind", pa.string()),
            pa.field("format", pa.string()),
            pa.field("title", pa.string()),
            pa.field("source_path", pa.string()),
            pa.field("source_hash", pa.string()),
            pa.field("content_hash", pa.string()),
            pa.field("external_id", pa.string()),
            pa.field("created_at", pa.timestamp("us")),
            pa.field("updated_at", pa.timestamp("us")),
            pa.field("language", pa.string()),
            pa.field("repaired", pa.bool_()),
            pa.field("repair_codec", pa.string()),
            pa.field("n_units", pa.int32()),
            pa.field("n_chars", pa.int64()),
            pa.field("ingested_at", pa.timestamp("us")),
            pa.field("body", pa.large_string()),
        ]
    )


def _row(doc: Document, now: datetime) -> dict:
    body = doc.body_text()
    return {
        "doc_id": doc.doc_id,
        "kind": doc.kind.value,
        "format": doc.format,
        "title": doc.title,
        "source_path": doc.source_path,
        "source_hash": doc.source_hash,
        "content_hash": doc.content_hash,
        "external_id": doc.external_id,
        "created_at": naive_utc(doc.created_at),
        "updated_at": naive_utc(doc.updated_at),
        "language": doc.language,
        "repaired": doc.repair.repaired,
        "repair_codec": doc.repair.codec,
        "n_units": doc.n_units(),
        "n_chars": len(body),
        "ingested_at": now,
        "body": doc.model_dump_json(),
    }


def _in_filter(column: str, values: Sequence[str]) -> str:
    quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def index_key(content_hash: str, source_path: str, title: str) -> str:
    """What the chunk index compares to decide a document must be re-chunked.

    Includes the path and title because chunk rows show them; re-chunking a moved file
    costs no embedding (vectors are cached by text hash).
    """
    return sha256_text("\x1f".join((content_hash, source_path, title)))[:32]


class DocumentStore:
    """Normalized documents of all kinds; the source of truth the chunk index is derived from."""

    def __init__(self, root: Path):
        import lancedb

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = lancedb.connect(str(self.root))
        self._tables: dict[Kind, object] = {}

    def _table(self, kind: Kind):
        if kind not in self._tables:
            self._tables[kind] = self._db.create_table(f"documents_{kind.value}", schema=_schema(), exist_ok=True)
        return self._tables[kind]

    def upsert(self, docs: Iterable[Document]) -> int:
        """Insert or replace documents by doc_id in one commit per kind and batch; returns rows written."""
        import pyarrow as pa

        now = datetime.now(UTC).replace(tzinfo=None)
        by_kind: dict[Kind, dict[str, Document]] = {}
        for doc in docs:
            by_kind.setdefault(doc.kind, {})[doc.doc_id] = doc
        written = 0
        for kind, docs_by_id in by_kind.items():
            items = list(docs_by_id.values())
            for start in range(0, len(items), _BATCH):
                rows = [_row(d, now) for d in items[start : start + _BATCH]]
                data = pa.Table.from_pylist(rows, schema=_schema())
                (
                    self._table(kind)
                    .merge_insert("doc_id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute(data)
                )
                written += len(rows)
        return written

    def delete(self, doc_ids: Iterable[str], kind: Kind | None = None) -> int:
        ids = sorted(set(doc_ids))
        if not ids:
            return 0
        deleted = 0
        for k in [kind] if kind else list(Kind):
            table = self._table(k)
            for start in range(0, len(ids), _BATCH):
                where = _in_filter("doc_id", ids[start : start + _BATCH])
                before = table.count_rows()
                table.delete(where)
                deleted += before - table.count_rows()
        return deleted

    def compact(self, kind: Kind) -> None:
        """Merge the small fragments many batched commits leave behind, so reads stay fast."""
        self._table(kind).optimize()

    def _select(self, kind: Kind, columns: list[str], where: str | None = None) -> list[dict]:
        query = self._table(kind).search().select(columns).limit(None)
        if where:
            query = query.where(where)
        return query.to_arrow().to_pylist()

    def content_hashes(self, kind: Kind | None = None) -> dict[str, str]:
        """doc_id -> index key (content hash + path + title) of every stored document."""
        keys: dict[str, str] = {}
        for k in [kind] if kind else list(Kind):
            for row in self._select(k, ["doc_id", "content_hash", "source_path", "title"]):
                keys[row["doc_id"]] = index_key(row["content_hash"], row["source_path"], row["title"])
        return keys

    def versions(self, kind: Kind) -> dict[str, dict]:
        """Light fields of every stored document of a kind (no body): one read per ingest run.

        Used to choose between two exports of one conversation without a query per file.
        """
        rows = self._select(kind, ["doc_id", "source_path", "updated_at", "n_units"])
        return {row["doc_id"]: row for row in rows}

    def dialogue_ids_of_format(self, fmt: str) -> set[str]:
        """Ids of the stored dialogues of one format (legacy rows to migrate)."""
        return {row["doc_id"] for row in self._select(Kind.DIALOGUE, ["doc_id"], f"format = '{fmt}'")}

    def get_many(self, doc_ids: Iterable[str]) -> Iterator[Document]:
        """The stored documents among ``doc_ids``, in no set order.

        A kind's table is asked only for the ids not found yet (indexing a batch of dialogues costs
        one query, not one per kind). Where the ids are a good part of a table (a first index, a
        model switch) the table is read through once instead of queried in batches of ids: for
        10k dialogues 0.05 s against 0.67 s.
        """
        remaining = set(doc_ids)
        for kind in Kind:
            if not remaining:
                return
            found: set[str] = set()
            for doc_id, body in self._bodies(kind, remaining):
                found.add(doc_id)
                yield Document.model_validate_json(body)
            remaining -= found

    def _bodies(self, kind: Kind, doc_ids: set[str]) -> Iterator[tuple[str, str]]:
        table = self._table(kind)
        if len(doc_ids) * _SCAN_SHARE >= table.count_rows():
            import pyarrow as pa
            import pyarrow.compute as pc

            wanted = pa.array(sorted(doc_ids), pa.string())
            for batch in table.search().select(["doc_id", "body"]).limit(None).to_batches(_BATCH):
                batch = batch.filter(pc.is_in(batch.column("doc_id"), value_set=wanted))
                yield from zip(batch.column("doc_id").to_pylist(), batch.column("body").to_pylist(), strict=True)
            return
        ordered = sorted(doc_ids)
        for start in range(0, len(ordered), _BATCH):
            for row in self._select(kind, ["doc_id", "body"], _in_filter("doc_id", ordered[start : start + _BATCH])):
                yield row["doc_id"], row["body"]

    def get(self, doc_id: str) -> Document | None:
        return next(self.get_many([doc_id]), None)

    def iter_documents(self, kind: Kind | None = None) -> Iterator[Document]:
        """All documents, read in batches so memory stays bounded on a large store."""
        for k in [kind] if kind else list(Kind):
            ids = sorted(self._select_ids(k))
            for start in range(0, len(ids), _BATCH):
                yield from self.get_many(ids[start : start + _BATCH])

    def _select_ids(self, kind: Kind) -> list[str]:
        return [row["doc_id"] for row in self._select(kind, ["doc_id"])]

    def count(self, kind: Kind | None = None) -> int:
        return sum(self._table(k).count_rows() for k in ([kind] if kind else list(Kind)))

    def summary_rows(self, kind: Kind | None = None) -> list[dict]:
        """One light row per document (no body), for previews, counts per format and the UI."""
        columns = [
            "doc_id",
            "kind",
            "format",
            "title",
            "source_path",
            "language",
            "repaired",
            "repair_codec",
            "n_units",
            "n_chars",
            "created_at",
        ]
        rows: list[dict] = []
        for k in [kind] if kind else list(Kind):
            rows.extend(self._select(k, columns))
        return rows
