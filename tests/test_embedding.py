"""The packaged MiniLM embedder, model identity, and the SQLite embedding cache."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memory_pipeline.config import EmbeddingConfig
from memory_pipeline.errors import ConfigError
from memory_pipeline.index.embedding import load_embedder, model_identity, model_slug, resolve_model_path
from memory_pipeline.index.embedding_cache import EmbeddingCache, embed_with_cache
from memory_pipeline.records import sha256_text

MINILM = "packaged:all-MiniLM-L6-v2"
TEXTS = [
    "Start the marathon slower than your goal pace.",
    "Ешьте углеводы вечером накануне забега.",
    "Recipe: fry the onions until golden, then add the tomatoes and simmer for twenty minutes.",
    "ok",
    "Long runs build endurance; keep them conversational and increase the distance by ten percent a week.",
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(EmbeddingConfig(model=MINILM, device="cpu", batch_size=2))


@pytest.fixture(scope="module")
def e5_style_embedder(embedder):
    """The same model with e5-style prefixes: another model id, the loaded model is shared."""
    config = EmbeddingConfig(model=MINILM, device="cpu", query_prefix="query: ", passage_prefix="passage: ")
    return load_embedder(config)


def test_packaged_minilm_identity_and_shape(embedder):
    assert embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert model_slug(embedder.model_id).startswith("all_minilm_l6_v2_")
    assert embedder.dimension == 384
    assert embedder.max_tokens == 256
    assert embedder.count_tokens("") == 2  # [CLS] and [SEP]
    assert embedder.count_tokens("Привет, мир") > embedder.count_tokens("Hello, world")


def test_passages_are_normalised_float32_deterministic_and_in_input_order(embedder):
    vectors = embedder.embed_passages(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_passages(TEXTS), vectors, atol=1e-6)
    one_by_one = np.stack([embedder.embed_passages([t])[0] for t in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-4)
    assert embedder.embed_passages([]).shape == (0, 384)


def test_query_finds_the_matching_passage(embedder):
    vectors = embedder.embed_passages(TEXTS)
    query = embedder.embed_query("how fast should I run at the start of a marathon")
    assert query.shape == (384,) and query.dtype == np.float32
    assert abs(float(np.linalg.norm(query)) - 1.0) < 1e-5
    assert int(np.argmax(vectors @ query)) == 0


def test_query_and_passage_prefixes(embedder, e5_style_embedder):
    text = TEXTS[0]
    np.testing.assert_allclose(embedder.embed_query(text), embedder.embed_passages([text])[0], atol=1e-5)
    query, passage = e5_style_embedder.embed_query(text), e5_style_embedder.embed_passages([text])[0]
    assert not np.allclose(query, passage, atol=1e-3)
    assert not np.allclose(passage, embedder.embed_passages([text])[0], atol=1e-3)
    assert e5_style_embedder.model_id != embedder.model_id
    assert e5_style_embedder.count_tokens(text) > embedder.count_tokens(text)


def test_resolve_model_path(tmp_path):
    packaged = Path(resolve_model_path("packaged:all-MiniLM-L6-v2"))
    assert (packaged / "config.json").is_file()
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"
    with pytest.raises(ConfigError, match="unknown packaged model"):
        resolve_model_path("packaged:nope")
    with pytest.raises(ConfigError, match="missing"):
        resolve_model_path(str(tmp_path / "missing"))


def test_local_model_identity_is_folder_name_and_config_hash_not_path(tmp_path):
    packaged = Path(resolve_model_path("packaged:all-MiniLM-L6-v2"))
    first, second = tmp_path / "a" / "my-model", tmp_path / "b" / "my-model"
    for folder in (first, second):
        folder.mkdir(parents=True)
        for name in ("config.json", "modules.json", "sentence_bert_config.json"):
            shutil.copy(packaged / name, folder / name)
    assert model_identity(str(first)) == model_identity(str(second))
    assert model_identity(str(first)).startswith("my-model@")
    (second / "config.json").write_text('{"changed": true}')
    assert model_identity(str(first)) != model_identity(str(second))
    assert model_slug(model_identity(str(first))) != model_slug(model_identity(str(second)))
    assert model_identity("BAAI/bge-m3") == "BAAI/bge-m3"


def test_model_slug_is_safe_and_unique():
    slug = model_slug("sentence-transformers/all-MiniLM-L6-v2")
    assert slug == model_slug("sentence-transformers/all-MiniLM-L6-v2")
    assert slug.replace("_", "").isalnum() and slug.islower()
    assert slug != model_slug("other-org/all-MiniLM-L6-v2")


# --- cache ---------------------------------------------------------------------------------------


def test_cache_round_trip_in_wal_mode(tmp_path):
    path = tmp_path / "cache" / "embeddings.sqlite"
    vectors = {"h1": np.arange(4, dtype=np.float32), "h2": np.ones(4, dtype=np.float64)}
    with EmbeddingCache(path) as cache:
        cache.put_many("model-a", vectors)
        assert cache.count("model-a") == 2 and cache.count("model-b") == 0
        found = cache.get_many("model-a", ["h1", "h2", "h3", "h1"])
        assert set(found) == {"h1", "h2"}
        np.testing.assert_array_equal(found["h1"], vectors["h1"])
        assert found["h2"].dtype == np.float32
        assert cache.get_many("model-b", ["h1"]) == {}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with EmbeddingCache(path) as reopened:
        assert reopened.count("model-a") == 2


def test_a_cache_written_without_rowid_is_moved_whole(tmp_path):
    """Caches written before the rowid table keep every vector, under the same keys."""
    path = tmp_path / "embeddings.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE vectors (model_id TEXT NOT NULL, text_hash TEXT NOT NULL, vector BLOB NOT NULL, "
            "PRIMARY KEY (model_id, text_hash)) WITHOUT ROWID"
        )
        db.executemany(
            "INSERT INTO vectors VALUES (?, ?, ?)",
            [("m", f"h{i}", np.full(512, i, dtype=np.float32).tobytes()) for i in range(50)],
        )
    with EmbeddingCache(path) as cache:
        found = cache.get_many("m", [f"h{i}" for i in range(50)])
        cache.put_many("m", {"h0": np.zeros(512, dtype=np.float32)})
        assert cache.count("m") == 50
    assert all(found[f"h{i}"][0] == i for i in range(50))
    with sqlite3.connect(path) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'vectors'").fetchone()
        assert "WITHOUT ROWID" not in sql.upper()
        assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'vectors_rowid'").fetchall()


def _open_cache(path: Path, barrier) -> None:
    barrier.wait()
    with EmbeddingCache(path) as cache:
        cache.put_many("m", {"h": np.ones(2, dtype=np.float32)})


def test_processes_creating_the_cache_at_once_all_open_it(tmp_path):
    """Range steps on several workers open a new cache together; SQLite's WAL switch does not wait by itself."""
    context = multiprocessing.get_context("fork")  # cheap starts, so the openings coincide often
    for attempt in range(20):
        path = tmp_path / f"{attempt}.sqlite"
        barrier = context.Barrier(4)
        processes = [context.Process(target=_open_cache, args=(path, barrier)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        assert [process.exitcode for process in processes] == [0, 0, 0, 0]


def test_embed_with_cache_embeds_each_text_once(embedder, e5_style_embedder, tmp_path):
    texts = {sha256_text(t): t for t in TEXTS}
    with EmbeddingCache(tmp_path / "embeddings.sqlite") as cache:
        vectors, embedded = embed_with_cache(embedder, texts, cache, batch_size=2)
        assert embedded == len(TEXTS) and set(vectors) == set(texts)
        again, embedded_again = embed_with_cache(embedder, texts, cache, batch_size=2)
        assert embedded_again == 0
        for text_hash in texts:
            np.testing.assert_array_equal(again[text_hash], vectors[text_hash])
        direct = embedder.embed_passages(TEXTS)
        np.testing.assert_allclose(np.stack([vectors[sha256_text(t)] for t in TEXTS]), direct, atol=1e-4)
        # Another model id (here: another passage prefix) never reuses these vectors.
        _, embedded_other = embed_with_cache(e5_style_embedder, texts, cache, batch_size=2)
        assert embedded_other == len(TEXTS)
        assert cache.count(embedder.model_id) == cache.count(e5_style_embedder.model_id) == len(TEXTS)


class _FailsOnSecondBatch:
    """A real embedder whose process 'dies' during the second batch."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.model_id, self.dimension, self.max_tokens = inner.model_id, inner.dimension, inner.max_tokens

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("killed")
        return self.inner.embed_passages(texts)


def test_crash_loses_at_most_one_batch_and_the_next_run_resumes(embedder, tmp_path):
    texts = {sha256_text(t): t for t in TEXTS}
    with EmbeddingCache(tmp_path / "embeddings.sqlite") as cache:
        with pytest.raises(RuntimeError, match="killed"):
            embed_with_cache(_FailsOnSecondBatch(embedder), texts, cache, batch_size=2)
        assert cache.count(embedder.model_id) == 2
        vectors, embedded = embed_with_cache(embedder, texts, cache, batch_size=2)
        assert embedded == len(TEXTS) - 2 and len(vectors) == len(TEXTS)
