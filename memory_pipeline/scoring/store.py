"""Item scores on disk: one Parquet file under ``storage/scores``, replaced atomically.

Parquet rather than a LanceDB table because the whole state is read and rewritten in one piece
each run (signals depend on each other across items) and readers want a few columns of it;
one atomic rename means a reader sees the previous run or this one, never a mix. Item vectors
and MinHash signatures are kept beside the signals, so a later run compares new items with
old ones without reading the chunk store again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from memory_pipeline.atomic import atomic_write, atomic_write_text
from memory_pipeline.config import Config
from memory_pipeline.errors import StoreError
from memory_pipeline.scoring.signals import MINHASH_PERM, SIGNALS

ITEMS_FILE = "items.parquet"
PROFILES_FILE = "adapter_profiles.npz"
REPORT_FILE = "last_report.json"
HISTORY_FILE = "tier_history.parquet"
HISTORY_COLUMNS = ("item_id", "at", "from_tier", "to_tier", "reason")

STRING_COLUMNS = (
    "item_id",
    "doc_id",
    "kind",
    "title",
    "source_path",
    "unit",
    "text",
    "user_text",
    "answer_text",
    "doc_key",
    "doc_chunks",
    "text_hash",
    "fingerprint",
    "vector_key",
    "novelty_neighbour",
    "cluster_keeper",
    "routes",
    "tier",
    "tier_base",
    "tier_rule",
    "superseded_by",
)
FLOAT_COLUMNS = (
    *SIGNALS,
    "novelty_sim",
    "compress_ratio",
    "token_entropy",
    "code_fraction",
    "recurrence_span_days",
    "score",
    "recall_score",
)
INT_COLUMNS = ("n_chars", "cluster_size", "hits", "recurrence_docs")
BOOL_COLUMNS = ("has_vector", "exact_duplicate")
LIST_COLUMNS = ("chunk_ids", "neighbours", "neighbour_sims", "markers", "tags", "quality_reasons", "adapters")
TIME_COLUMNS = ("created_at", "first_seen", "last_used")
COLUMNS = (*STRING_COLUMNS, *FLOAT_COLUMNS, *INT_COLUMNS, *BOOL_COLUMNS, *LIST_COLUMNS, *TIME_COLUMNS)


def scores_dir(config: Config) -> Path:
    return config.scores_dir


@dataclass
class ScoreState:
    """Everything a run leaves for the next: one frame row per item, vectors and signatures aligned."""

    frame: pd.DataFrame
    vectors: np.ndarray
    signatures: np.ndarray
    model_id: str = ""
    profiles_key: str = ""
    markers_key: str = ""

    @classmethod
    def empty(cls, dim: int = 0) -> ScoreState:
        frame = pd.DataFrame({c: pd.Series([], dtype=_dtype(c)) for c in COLUMNS})
        return cls(frame, np.zeros((0, dim), dtype=np.float32), np.zeros((0, MINHASH_PERM), dtype=np.uint32))

    def __len__(self) -> int:
        return len(self.frame)


def _dtype(column: str) -> str:
    if column in FLOAT_COLUMNS:
        return "float64"
    if column in INT_COLUMNS:
        return "int64"
    if column in BOOL_COLUMNS:
        return "bool"
    if column in TIME_COLUMNS:
        return "datetime64[us]"
    return "object"


class ScoreStore:
    """Read and write the score state of one storage root."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def items_path(self) -> Path:
        return self.root / ITEMS_FILE

    def exists(self) -> bool:
        return self.items_path.is_file()

    def load(self) -> ScoreState | None:
        """The whole state, or None before the first run."""
        import pyarrow.parquet as pq

        if not self.exists():
            return None
        table = pq.read_table(self.items_path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        dim = int(meta.get("vector_dim", "0"))
        vectors = _fixed_list_to_numpy(table.column("vector"), dim, np.float32)
        signatures = _fixed_list_to_numpy(table.column("minhash"), MINHASH_PERM, np.uint32)
        frame = _as_lists(_with_all_columns(table.drop_columns(["vector", "minhash"]).to_pandas()))
        return ScoreState(
            frame,
            vectors,
            signatures,
            meta.get("model_id", ""),
            meta.get("profiles_key", ""),
            meta.get("markers_key", ""),
        )

    def load_frame(self, columns: list[str] | None = None, *, item_ids: list[str] | None = None) -> pd.DataFrame:
        """Selected columns (default: all but vectors) of every item or of some: what readers need."""
        import pyarrow.parquet as pq

        if not self.exists():
            raise StoreError(f"{self.items_path}: no item scores yet; run the promotion first")
        filters = [("item_id", "in", item_ids)] if item_ids is not None else None
        wanted = columns or list(COLUMNS)
        present = set(pq.read_schema(self.items_path).names)
        frame = pq.read_table(self.items_path, columns=[c for c in wanted if c in present], filters=filters).to_pandas()
        return _as_lists(_with_all_columns(frame, wanted))

    def save(self, state: ScoreState) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = state.frame.reset_index(drop=True)
        table = pa.Table.from_pandas(frame[list(COLUMNS)], preserve_index=False, schema=_schema())
        dim = state.vectors.shape[1]
        vectors = state.vectors if dim else np.zeros((len(frame), 1), dtype=np.float32)
        table = table.append_column("vector", _fixed_list(vectors.astype(np.float32), max(dim, 1), pa.float32()))
        table = table.append_column(
            "minhash", _fixed_list(state.signatures.astype(np.uint32), MINHASH_PERM, pa.uint32())
        )
        table = table.replace_schema_metadata(
            {
                "model_id": state.model_id,
                "profiles_key": state.profiles_key,
                "markers_key": state.markers_key,
                "vector_dim": str(dim),
            }
        )
        atomic_write(self.items_path, lambda tmp: pq.write_table(table, tmp))

    def load_profile_vectors(self, model_id: str) -> dict[str, np.ndarray]:
        """Cached vectors of adapter descriptions/examples, by text hash, for ``model_id`` only."""
        path = self.root / PROFILES_FILE
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as data:
            if str(data["model_id"]) != model_id:
                return {}
            return {str(k): v for k, v in zip(data["keys"], data["vectors"], strict=True)}

    def save_profile_vectors(self, model_id: str, vectors: dict[str, np.ndarray]) -> None:
        import io

        keys = sorted(vectors)
        buffer = io.BytesIO()
        stacked = np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)
        np.savez(buffer, model_id=np.array(model_id), keys=np.array(keys, dtype=str), vectors=stacked)
        atomic_write(self.root / PROFILES_FILE, lambda tmp: tmp.write_bytes(buffer.getvalue()))

    def record_tier_changes(self, before: dict[str, str], frame: pd.DataFrame, at) -> int:
        """Append a history row for every item whose tier label changed (new items: from ''; removed: to 'removed').

        The history is what makes the tiers a lifecycle a person can follow: when an item moved and why.
        Returns how many changes were recorded.
        """
        after = dict(zip(frame["item_id"], frame["tier"], strict=True))
        rules = dict(zip(frame["item_id"], frame["tier_rule"], strict=True))
        rows = [
            {
                "item_id": item_id,
                "at": at,
                "from_tier": before.get(item_id, ""),
                "to_tier": tier,
                "reason": rules[item_id],
            }
            for item_id, tier in after.items()
            if before.get(item_id, "") != tier
        ]
        rows += [
            {
                "item_id": item_id,
                "at": at,
                "from_tier": tier,
                "to_tier": "removed",
                "reason": "its document left the store",
            }
            for item_id, tier in before.items()
            if item_id not in after
        ]
        if rows:
            import pyarrow as pa
            import pyarrow.parquet as pq

            new = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
            old = self.load_history()
            merged = pd.concat([old, new], ignore_index=True) if len(old) else new
            merged["at"] = pd.to_datetime(merged["at"]).astype("datetime64[us]")
            table = pa.Table.from_pandas(merged, preserve_index=False)
            atomic_write(self.root / HISTORY_FILE, lambda tmp: pq.write_table(table, tmp))
        return len(rows)

    def load_history(self, item_id: str | None = None) -> pd.DataFrame:
        """Tier changes, oldest first: of one item, or of all."""
        import pyarrow.parquet as pq

        path = self.root / HISTORY_FILE
        if not path.is_file():
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in HISTORY_COLUMNS})
        filters = [("item_id", "=", item_id)] if item_id is not None else None
        return pq.read_table(path, filters=filters).to_pandas()

    def save_report(self, report: dict) -> None:
        atomic_write_text(self.root / REPORT_FILE, json.dumps(report, ensure_ascii=False, indent=2, default=str))


def _with_all_columns(frame: pd.DataFrame, columns=COLUMNS) -> pd.DataFrame:
    """A frame from an older store gains the columns added since, empty (filled on the next run)."""
    for column in columns:
        if column not in frame.columns:
            frame[column] = (
                pd.Series([None] * len(frame), dtype=_dtype(column))
                if column not in LIST_COLUMNS
                else pd.Series([[] for _ in range(len(frame))], dtype=object)
            )
    return frame


def _as_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """List columns as Python lists in every row (Parquet gives arrays, and None for a null): readers need no guards."""
    for column in LIST_COLUMNS:
        if column in frame.columns:
            values = [[] if v is None else v.tolist() if isinstance(v, np.ndarray) else list(v) for v in frame[column]]
            frame[column] = pd.Series(values, index=frame.index, dtype=object)
    return frame


def stored_time(value) -> datetime | None:
    """A time cell of the frame (a Timestamp, NaT or None) as a datetime, None when unknown."""
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).to_pydatetime()


def _schema():
    import pyarrow as pa

    fields = []
    for c in COLUMNS:
        if c in FLOAT_COLUMNS:
            t = pa.float64()
        elif c in INT_COLUMNS:
            t = pa.int64()
        elif c in BOOL_COLUMNS:
            t = pa.bool_()
        elif c in TIME_COLUMNS:
            t = pa.timestamp("us")
        elif c == "neighbour_sims":
            t = pa.list_(pa.float32())
        elif c in LIST_COLUMNS:
            t = pa.list_(pa.string())
        else:
            t = pa.large_string() if c in ("text", "user_text", "answer_text") else pa.string()
        fields.append(pa.field(c, t))
    return pa.schema(fields)


def _fixed_list(matrix: np.ndarray, width: int, value_type):
    import pyarrow as pa

    values = pa.array(matrix.reshape(-1), type=value_type)
    return pa.FixedSizeListArray.from_arrays(values, width)


def _fixed_list_to_numpy(column, width: int, dtype) -> np.ndarray:
    if len(column) == 0 or width == 0:
        return np.zeros((len(column), width), dtype=dtype)
    values = column.combine_chunks().values.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape(len(column), width)
