"""A FAISS index mirroring the LanceDB vectors under the same int64 ids, saved atomically.

Exact inner-product search (vectors are normalised, so it is cosine) below a size threshold;
HNSW or IVF above it. The file is always derived from LanceDB, so a missing, stale or corrupt
file is rebuilt rather than trusted; so is an HNSW or IVF index that rows left (only the flat
index removes vectors in place).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from memory_pipeline.atomic import atomic_write, atomic_write_text
from memory_pipeline.config import IndexConfig
from memory_pipeline.index.embedding import model_slug


class FaissIndex:
    def __init__(self, folder: Path, model_id: str, dimension: int, settings: IndexConfig):
        self.folder = Path(folder)
        self.model_id = model_id
        self.dimension = dimension
        self.settings = settings
        slug = model_slug(model_id)
        self.path = self.folder / f"{slug}.faiss"
        self.meta_path = self.folder / f"{slug}.json"
        self.index = None
        self.kind = "flat"

    # --- lifecycle ---------------------------------------------------------------------------

    def load(self) -> bool:
        """Read the saved index; False (and an empty index) when missing, corrupt or of another model."""
        import faiss

        self.index = None
        if self.path.is_file() and self.meta_path.is_file():
            try:
                meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
                index = faiss.read_index(str(self.path))
                if (
                    meta.get("model_id") == self.model_id
                    and index.d == self.dimension
                    and index.ntotal == meta.get("count")
                ):
                    self.index, self.kind = index, meta.get("index_type", "flat")
                    return True
            except (RuntimeError, ValueError, json.JSONDecodeError):
                pass
        self.index = self._empty("flat")
        self.kind = "flat"
        return False

    def save(self) -> None:
        import faiss

        atomic_write(self.path, lambda tmp: faiss.write_index(self.index, str(tmp)))
        meta = {
            "model_id": self.model_id,
            "dimension": self.dimension,
            "index_type": self.kind,
            "count": int(self.index.ntotal),
        }
        atomic_write_text(self.meta_path, json.dumps(meta, indent=2))

    def _empty(self, kind: str, training: np.ndarray | None = None):
        import faiss

        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dimension, self.settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = max(64, self.settings.hnsw_m * 2)
        elif kind == "ivf":
            quantizer = faiss.IndexFlatIP(self.dimension)
            nlist = max(1, min(self.settings.ivf_nlist, len(training) // 39 if training is not None else 1))
            inner = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.train(training)
            inner.nprobe = max(1, nlist // 16)
        else:
            inner = faiss.IndexFlatIP(self.dimension)
        return faiss.IndexIDMap2(inner)

    # --- contents ----------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        import faiss

        if self.ntotal == 0:
            return np.zeros(0, dtype=np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def wanted_kind(self, total: int) -> str:
        return "flat" if total <= self.settings.faiss_flat_max else self.settings.faiss_large_index

    def rebuild(self, batches) -> None:
        """Build from (ids, vectors) batches: used when the file is missing/stale or the index type must change."""
        ids_parts, vector_parts = [], []
        for ids, vectors in batches:
            ids_parts.append(ids)
            vector_parts.append(vectors)
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        vectors = np.concatenate(vector_parts) if vector_parts else np.zeros((0, self.dimension), dtype=np.float32)
        self.kind = self.wanted_kind(len(ids))
        self.index = self._empty(self.kind, training=vectors if self.kind == "ivf" else None)
        if len(ids):
            self.index.add_with_ids(vectors, ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids in place; False when the index type cannot, so the caller rebuilds.

        Only the flat index can. HNSW has no removal, and IndexIDMap2 over IVF goes wrong: IVF keeps
        the sequential ids of the remaining entries while the id map is compacted, so hits come back
        under other chunks' ids, or faiss aborts on a later removal (faiss issues #4535, #1643).
        """
        import faiss

        if not len(ids):
            return True
        if self.kind != "flat":
            return False
        self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))
        return True

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k nearest; ids of -1 (no result) dropped."""
        if self.ntotal == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        scores, ids = self.index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), min(k, self.ntotal))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]
