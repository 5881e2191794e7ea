"""Incremental indexing into a real LanceDB and real FAISS files, with the real packaged default model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memory_pipeline.config import Config
from memory_pipeline.index import sync as indexer
from memory_pipeline.index.chunking import chunk_document
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.sync import check_consistency, open_stores, read_ahead, split_last_pool, sync_index
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(Config().embedding)


def _paragraphs(topic: str, n: int) -> str:
    return "\n\n".join(
        f"Абзац {i} о теме «{topic}»: бег, темп, восстановление и сон, запись номер {i}." for i in range(n)
    )


@pytest.fixture()
def corpus(tmp_path) -> Config:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "long.md").write_text("# Длинная заметка\n\n" + _paragraphs("марафон", 40), encoding="utf-8")
    (notes / "short.md").write_text("# Короткая\n\nЛёгкий бег развивает аэробную базу.\n", encoding="utf-8")
    (notes / "other.md").write_text("# Football\n\nPressing needs compact lines.\n", encoding="utf-8")
    return Config(
        storage_root=tmp_path / "storage",
        sources={"articles": [notes]},
        chunking={"max_tokens": 64, "overlap_tokens": 8},
    )


def _ingested_notes(tmp_path: Path, count: int, *, paragraphs: int) -> Config:
    """``count`` short Russian notes, ingested: a corpus of many documents for runs of several pools."""
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(count):
        (notes / f"n{i:03d}.md").write_text(
            f"# Заметка {i}\n\n{_paragraphs(f'тема {i}', paragraphs)}\n", encoding="utf-8"
        )
    config = Config(storage_root=tmp_path / "storage", sources={"articles": [notes]})
    ingest_all(config)
    return config


def _index(config: Config, embedder):
    ingest_all(config)
    return sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)


def _chunks_by_doc(config: Config, embedder) -> dict[str, set[str]]:
    store, _ = open_stores(config, embedder.model_id, embedder.dimension)
    found: dict[str, set[str]] = {}
    for row in store.rows(["doc_id", "chunk_id"]):
        found.setdefault(row["doc_id"], set()).add(row["chunk_id"])
    return found


def _expected(config: Config, embedder) -> dict[str, set[str]]:
    """Every document's chunks, under the lineage the index gave the document."""
    store, _ = open_stores(config, embedder.model_id, embedder.dimension)
    lineages = {r["doc_id"]: r["lineage"] for r in store.rows(["doc_id", "lineage"])}
    docs = DocumentStore(config.documents_dir).iter_documents()
    return {
        d.doc_id: {
            c.chunk_id
            for c in chunk_document(
                d,
                config.chunking,
                lineage=lineages.get(d.doc_id),
                max_model_tokens=embedder.max_tokens,
                count_model_tokens=embedder.count_tokens,
            )
        }
        for d in docs
    }


def test_add_change_delete_keep_both_stores_equal_and_complete(corpus, embedder):
    first = _index(corpus, embedder)
    assert first.docs_indexed == 3 and first.embedded == first.chunks_total > 10
    assert check_consistency(corpus).ok
    assert _chunks_by_doc(corpus, embedder) == _expected(corpus, embedder)

    notes = corpus.sources.articles[0]
    long_text = (notes / "long.md").read_text(encoding="utf-8")
    (notes / "long.md").write_text(long_text + "\n\nНовый абзац в конце про интервалы и пульс.\n", encoding="utf-8")
    changed = _index(corpus, embedder)
    assert (
        changed.docs_indexed == 1 and changed.docs_deleted == 1
    )  # a changed file is a new document (identity by content)
    assert 0 < changed.embedded < first.embedded / 4  # only the new text is embedded, the rest comes from the cache
    assert _chunks_by_doc(corpus, embedder) == _expected(corpus, embedder)  # every chunk of the long document is there
    assert check_consistency(corpus).ok

    (notes / "other.md").unlink()
    deleted = _index(corpus, embedder)
    assert deleted.docs_deleted == 1 and deleted.embedded == 0
    assert len(_chunks_by_doc(corpus, embedder)) == 2
    report = check_consistency(corpus)
    assert report.ok and report.lancedb_rows == report.faiss_ntotal


def test_no_change_and_moved_file_embed_nothing(corpus, embedder):
    _index(corpus, embedder)
    again = _index(corpus, embedder)
    assert (again.docs_indexed, again.embedded, again.chunks_added, again.chunks_removed) == (0, 0, 0, 0)
    notes = corpus.sources.articles[0]
    (notes / "moved").mkdir()
    os.replace(notes / "short.md", notes / "moved" / "short.md")
    moved = _index(corpus, embedder)
    assert moved.embedded == 0
    store, _ = open_stores(corpus, embedder.model_id, embedder.dimension)
    paths = {r["source_path"] for r in store.rows(["source_path"])}
    assert any(p.endswith("moved/short.md") for p in paths) and not any(p.endswith("notes/short.md") for p in paths)
    assert check_consistency(corpus).ok


# Chunk ids follow a document's lineage: an edited file is a new document, its unchanged chunks are not

PLAN = [
    "Лёгкий бег по утрам развивает аэробную базу.",
    "Интервалы по четыреста метров раз в неделю.",
    "Сон не меньше восьми часов.",
    "Углеводы накануне длинной пробежки.",
]


def _sectioned(*texts: str) -> str:
    """A markdown article with one short section per text, so each section is one chunk."""
    return "# План\n\n" + "".join(f"## Часть {i}\n\n{text}\n\n" for i, text in enumerate(texts))


def _chunk_rows(config: Config, embedder, name: str) -> dict[str, tuple[str, int]]:
    """text -> (chunk_id, row_id) of the chunks of the file called ``name``."""
    store, _ = open_stores(config, embedder.model_id, embedder.dimension)
    rows = store.rows(["text", "chunk_id", "row_id", "source_path"])
    return {r["text"]: (r["chunk_id"], r["row_id"]) for r in rows if Path(r["source_path"]).name == name}


def _faiss_ids(config: Config, embedder) -> set[int]:
    _, faiss_index = open_stores(config, embedder.model_id, embedder.dimension)
    assert faiss_index.load()
    return {int(i) for i in faiss_index.ids()}


def _assert_only_one_chunk_changed(
    before: dict, after: dict, faiss_before: set[int], config: Config, embedder, edited
) -> str:
    """The edited chunk got a new id and FAISS row; every other chunk kept both. Returns the new text."""
    (old_text,) = before.keys() - after.keys()
    (new_text,) = after.keys() - before.keys()
    assert all(after[text] == before[text] for text in before.keys() & after.keys())
    assert (edited.docs_indexed, edited.docs_deleted, edited.embedded, edited.chunks_added, edited.chunks_removed) == (
        1,
        1,
        1,
        1,
        1,
    )
    assert not edited.faiss_rebuilt and _faiss_ids(config, embedder) == faiss_before - {before[old_text][1]} | {
        after[new_text][1]
    }
    assert check_consistency(config).ok and _chunks_by_doc(config, embedder) == _expected(config, embedder)
    return new_text


def test_an_edited_article_keeps_the_ids_and_faiss_rows_of_its_unchanged_chunks(corpus, embedder):
    notes = corpus.sources.articles[0]
    plan = list(PLAN)
    (notes / "plan.md").write_text(_sectioned(*plan), encoding="utf-8")
    _index(corpus, embedder)
    before, faiss_before = _chunk_rows(corpus, embedder, "plan.md"), _faiss_ids(corpus, embedder)
    assert len(before) == len(plan)

    plan[2] = "Сон не меньше восьми часов, после длинной пробежки девять."
    (notes / "plan.md").write_text(_sectioned(*plan), encoding="utf-8")
    edited = _index(corpus, embedder)
    after = _chunk_rows(corpus, embedder, "plan.md")
    assert plan[2] in _assert_only_one_chunk_changed(before, after, faiss_before, corpus, embedder, edited)

    (notes / "moved").mkdir()
    os.replace(notes / "plan.md", notes / "moved" / "plan.md")
    moved = _index(corpus, embedder)
    assert moved.embedded == 0 and _chunk_rows(corpus, embedder, "plan.md") == after


def _nexus_note(exchanges: list[tuple[str, str]]) -> str:
    return "# Подготовка к марафону\n\n" + "".join(f"### User\n{q}\n\n### Assistant\n{a}\n\n" for q, a in exchanges)


def test_an_edited_nexus_note_without_ids_keeps_the_ids_of_its_unchanged_exchanges(tmp_path, embedder):
    chats = tmp_path / "chats"
    chats.mkdir()
    exchanges = [
        ("Сколько бегать в неделю?", "Начни с тридцати километров."),
        ("Как питаться перед стартом?", "Больше углеводов за два дня."),
        ("Когда отдыхать?", "Один день в неделю полностью без бега."),
    ]
    (chats / "марафон.md").write_text(_nexus_note(exchanges), encoding="utf-8")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [chats]})
    _index(config, embedder)
    [first] = DocumentStore(config.documents_dir).iter_documents()
    assert first.format == "nexus_md" and first.external_id is None  # identity from the file's bytes
    before, faiss_before = _chunk_rows(config, embedder, "марафон.md"), _faiss_ids(config, embedder)
    assert len(before) == len(exchanges)

    exchanges[1] = ("Как питаться перед стартом?", "Больше углеводов за два дня и вода на каждом пункте.")
    (chats / "марафон.md").write_text(_nexus_note(exchanges), encoding="utf-8")
    edited = _index(config, embedder)
    [second] = DocumentStore(config.documents_dir).iter_documents()
    assert second.doc_id != first.doc_id  # a new document, on the lineage of the one it replaced
    after = _chunk_rows(config, embedder, "марафон.md")
    assert "вода на каждом пункте" in _assert_only_one_chunk_changed(
        before, after, faiss_before, config, embedder, edited
    )


def test_the_same_paragraph_in_two_files_has_two_ids_also_after_an_edit_and_a_copy_of_the_first_version(
    corpus, embedder
):
    notes = corpus.sources.articles[0]
    shared = "Разминка десять минут перед любой тренировкой."
    first_version = _sectioned(shared, "Первый файл про темп.")
    (notes / "one.md").write_text(first_version, encoding="utf-8")
    (notes / "two.md").write_text(_sectioned(shared, "Второй файл про пульс."), encoding="utf-8")
    _index(corpus, embedder)

    def shared_ids() -> tuple[set[str], set[int]]:
        store, _ = open_stores(corpus, embedder.model_id, embedder.dimension)
        rows = [r for r in store.rows(["text", "chunk_id", "row_id"]) if shared in r["text"]]
        return {r["chunk_id"] for r in rows}, {r["row_id"] for r in rows}

    assert [len(ids) for ids in shared_ids()] == [2, 2]
    (notes / "one.md").write_text(_sectioned(shared, "Первый файл про темп, исправленный."), encoding="utf-8")
    _index(corpus, embedder)
    # The first version again as a new file: its doc_id is the lineage one.md's chunks carry now.
    (notes / "three.md").write_text(first_version, encoding="utf-8")
    _index(corpus, embedder)
    assert [len(ids) for ids in shared_ids()] == [3, 3]
    report = check_consistency(corpus)
    assert report.ok and report.duplicate_chunk_ids == 0
    assert _chunks_by_doc(corpus, embedder) == _expected(corpus, embedder)


def test_a_chunk_table_from_before_lineages_gets_them_and_keeps_its_ids(corpus, embedder):
    _index(corpus, embedder)
    ids = _chunks_by_doc(corpus, embedder)
    store, _ = open_stores(corpus, embedder.model_id, embedder.dimension)
    store.table.drop_columns(["lineage"])
    again = _index(corpus, embedder)
    assert (again.docs_indexed, again.embedded) == (0, 0) and _chunks_by_doc(corpus, embedder) == ids
    store, _ = open_stores(corpus, embedder.model_id, embedder.dimension)
    assert all(r["lineage"] == r["doc_id"] for r in store.rows(["doc_id", "lineage"]))
    notes = corpus.sources.articles[0]
    (notes / "short.md").write_text("# Короткая\n\nЛёгкий бег развивает аэробную базу и сердце.\n", encoding="utf-8")
    _index(corpus, embedder)
    assert check_consistency(corpus).ok and _chunks_by_doc(corpus, embedder) == _expected(corpus, embedder)


# FAISS index type by size


@pytest.mark.parametrize("large", ["hnsw", "ivf"])
def test_faiss_switches_index_type_at_the_threshold_and_stays_equal_to_lancedb(corpus, embedder, large):
    import faiss

    from memory_pipeline.index.search import Searcher

    config = corpus.model_copy(
        update={"index": corpus.index.model_copy(update={"faiss_flat_max": 8, "faiss_large_index": large})}
    )
    inner = {"flat": faiss.IndexFlatIP, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}

    def mirrored(kind: str) -> None:
        """FAISS holds exactly LanceDB's ids in an index of ``kind``, and each chunk's vector finds that chunk first."""
        store, faiss_index = open_stores(config, embedder.model_id, embedder.dimension)
        assert faiss_index.load() and faiss_index.kind == kind
        assert isinstance(faiss.downcast_index(faiss_index.index.index), inner[kind])
        rows = store.rows(["row_id", "text", "vector"])
        assert faiss_index.ntotal == len(rows) and sorted(faiss_index.ids().tolist()) == sorted(
            r["row_id"] for r in rows
        )
        text_of = {r["row_id"]: r["text"] for r in rows}
        for row in rows:
            _, ids = faiss_index.search(row["vector"], 1)
            assert text_of[int(ids[0])] == row["text"]
        assert check_consistency(config).ok

    first = _index(config, embedder)
    assert first.chunks_total > 8
    mirrored(large)
    [hit] = Searcher(config, embedder=embedder).search("Pressing needs compact lines", k=1, mode="vector", log=False)
    assert hit.title == "Football"

    notes = config.sources.articles[0]
    (notes / "short.md").write_text("# Короткая\n\nДлинные пробежки по выходным укрепляют сердце.\n", encoding="utf-8")
    changed = _index(config, embedder)
    assert (
        changed.chunks_added == changed.chunks_removed == 1 and changed.faiss_rebuilt
    )  # neither type removes in place
    mirrored(large)
    (notes / "other.md").unlink()
    deleted = _index(config, embedder)
    assert deleted.chunks_removed == 1 and deleted.faiss_rebuilt
    mirrored(large)
    (notes / "long.md").unlink()
    shrunk = _index(config, embedder)
    assert shrunk.chunks_total <= 8 and shrunk.faiss_rebuilt
    mirrored("flat")


@pytest.mark.parametrize("damage", ["delete", "garbage", "stale"])
def test_a_damaged_faiss_file_is_repaired_from_lancedb(corpus, embedder, damage):
    _index(corpus, embedder)
    _, faiss_index = open_stores(corpus, embedder.model_id, embedder.dimension)
    if damage == "delete":
        faiss_index.path.unlink()
    elif damage == "garbage":
        faiss_index.path.write_bytes(b"not a faiss index")
    else:
        faiss_index.load()
        faiss_index.remove(faiss_index.ids()[:3])
        faiss_index.save()
    assert not check_consistency(corpus).ok
    repaired = _index(corpus, embedder)
    assert repaired.embedded == 0
    assert check_consistency(corpus).ok


# The run holds still before embedding its next batch once one batch is committed, so the kill
# surely lands mid-run (never after the child finished) while the store is half written.
KILLED_RUN = """
import sys, time
from memory_pipeline.config import Config
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index import sync as indexer
from memory_pipeline.index.sync import open_stores, sync_index
indexer.EMBED_POOL = 64  # several commits in this small corpus
config = Config.model_validate_json(sys.argv[1])
embedder = load_embedder(config.embedding)
store, _ = open_stores(config, embedder.model_id, embedder.dimension)
embed_passages = embedder.embed_passages
def held_after_first_commit(texts, **options):
    while store.count() > 0:
        time.sleep(1)
    return embed_passages(texts, **options)
embedder.embed_passages = held_after_first_commit
sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
"""


def test_kill_minus_nine_mid_run_then_next_run_repairs_everything(tmp_path, embedder):
    config = _ingested_notes(tmp_path, 450, paragraphs=3)
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, config.model_dump_json()])

    def committed() -> int:
        """Rows the child has committed, read through a new handle (an open one may keep an old version)."""
        return open_stores(config, embedder.model_id, embedder.dimension)[0].count()

    deadline = time.time() + 300
    while child.poll() is None and time.time() < deadline:
        if committed() > 0:
            break
        time.sleep(0.2)
    assert child.poll() is None and committed() > 0
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    report = sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    assert check_consistency(config).ok
    assert _chunks_by_doc(config, embedder) == _expected(config, embedder)
    assert report.docs_indexed <= 450


def test_model_switch_is_a_reported_migration_into_the_new_models_table(corpus, embedder):
    """Indexed with MiniLM, then switched to the default: every document is re-embedded into the new
    model's table, the report names the table it came from, and search reads the new table."""
    from memory_pipeline.index.search import Searcher

    minilm_config = corpus.model_copy(deep=True)
    minilm_config.embedding.model = "packaged:all-MiniLM-L6-v2"
    minilm = load_embedder(minilm_config.embedding)
    assert not _index(minilm_config, minilm).migrated_from  # the first model: nothing to migrate
    old, _ = open_stores(minilm_config, minilm.model_id, minilm.dimension)
    report = sync_index(corpus, DocumentStore(corpus.documents_dir), embedder, progress=False)
    assert report.migrated_from == {old.table_name: 3} and report.not_migrated == 0
    assert report.embedded == report.chunks_total > 0  # cache is keyed by model id: everything embedded again
    assert "model switch" in report.migration_line() and old.table_name in report.migration_line()
    new, faiss_index = open_stores(corpus, embedder.model_id, embedder.dimension)
    assert new.table_name != old.table_name and set(new.indexed_documents()) == set(old.indexed_documents())
    assert old.count() > 0  # the earlier table is kept
    assert json.loads(Path(faiss_index.meta_path).read_text())["model_id"] == embedder.model_id
    assert check_consistency(corpus).ok
    assert not sync_index(corpus, DocumentStore(corpus.documents_dir), embedder, progress=False).migrated_from
    other = corpus.sources.articles[0] / "other.md"
    other.write_text(other.read_text(encoding="utf-8") + "\nCounter-pressing wins the ball high.\n", encoding="utf-8")
    edited = _index(corpus, embedder)  # the old MiniLM table still holds this article's earlier version
    assert edited.docs_indexed == 1 and not edited.migrated_from
    searcher = Searcher(corpus, embedder=embedder)
    assert searcher.stats()["chunks"] == new.count()
    assert searcher.search("компактные линии в прессинге", k=3, mode="vector")[0].title == "Football"


def test_a_second_indexing_run_fails_at_once_naming_the_first(corpus, embedder):
    """First-time documents are appended, not merged: two runs at once must not both append them."""
    from memory_pipeline.atomic import exclusive_lock
    from memory_pipeline.errors import StoreError

    with exclusive_lock(corpus.index_lock_path, "an indexing run"):
        with pytest.raises(StoreError, match=r"an indexing run is already running on this storage \(pid \d+"):
            _index(corpus, embedder)
    report = _index(corpus, embedder)
    assert report.docs_indexed > 0 and check_consistency(corpus).ok


def test_the_last_pool_ends_with_a_small_one_whose_commit_is_short():
    def pool(*sizes: int) -> list:
        return [(f"doc{i}", [None] * n) for i, n in enumerate(sizes)]

    def chunks(pools: list) -> list[int]:
        return [sum(len(c) for _, c in p) for p in pools]

    assert chunks(split_last_pool(pool(*[1] * 600), 256)) == [344, 256]
    assert chunks(split_last_pool(pool(*[100] * 6), 256)) == [300, 300]  # whole documents
    assert chunks(split_last_pool(pool(*[1] * 511), 256)) == [511]  # not worth cutting
    assert chunks(split_last_pool(pool(300), 256)) == [300]
    assert split_last_pool([], 256) == []


def test_read_ahead_makes_the_next_item_while_the_caller_holds_this_one_and_raises_in_order():
    from concurrent.futures import ThreadPoolExecutor

    made: list[int] = []

    def items():
        for i in range(3):
            made.append(i)
            yield i
        raise ValueError("the fourth item is broken")

    with ThreadPoolExecutor(1) as executor:
        got = read_ahead(items(), executor)
        for i in range(3):
            assert next(got) == i
            deadline = time.time() + 10
            while len(made) < min(i + 2, 3) and time.time() < deadline:
                time.sleep(0.01)
            assert made == list(range(min(i + 2, 3)))  # the next one made meanwhile, never two ahead
        with pytest.raises(ValueError, match="fourth item"):
            next(got)


def test_a_document_failing_to_chunk_mid_run_fails_the_run_whole_documents_kept_the_next_run_completes(
    tmp_path, embedder, monkeypatch
):
    """Chunking runs a pool ahead on its own thread: its error still stops the run, the pools before it
    stay committed whole, and the next run indexes the rest."""
    config = _ingested_notes(tmp_path, 12, paragraphs=2)
    monkeypatch.setattr(indexer, "DOC_BATCH", 2)
    monkeypatch.setattr(indexer, "FIRST_POOL", 2)
    monkeypatch.setattr(indexer, "EMBED_POOL", 2)
    chunk = indexer.chunk_document
    seen: list[str] = []

    def failing_on_the_ninth(doc, *args, **kwargs):
        seen.append(doc.doc_id)
        if len(seen) == 9:
            raise ValueError(f"cannot chunk {doc.source_path}")
        return chunk(doc, *args, **kwargs)

    monkeypatch.setattr(indexer, "chunk_document", failing_on_the_ninth)
    with pytest.raises(ValueError, match="cannot chunk .*n\\d{3}.md"):
        sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    kept = _chunks_by_doc(config, embedder)
    expected = _expected(config, embedder)
    assert 0 < len(kept) < 9 and all(kept[d] == expected[d] for d in kept)  # whole documents only

    monkeypatch.setattr(indexer, "chunk_document", chunk)
    report = sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    assert report.docs_indexed == 12 - len(kept) and report.cache_hits == 0
    assert _chunks_by_doc(config, embedder) == _expected(config, embedder)
    assert check_consistency(config).ok


def test_indexing_collects_young_objects_rarely_and_restores_the_thresholds(corpus, embedder, monkeypatch):
    import gc

    from memory_pipeline.batch_gc import YOUNG_OBJECTS

    before = gc.get_threshold()
    seen: list[int] = []
    embed = embedder.embed_passages

    def recording(texts, **kwargs):
        seen.append(gc.get_threshold()[0])
        return embed(texts, **kwargs)

    monkeypatch.setattr(embedder, "embed_passages", recording)
    assert _index(corpus, embedder).embedded > 0
    assert seen and all(threshold >= YOUNG_OBJECTS for threshold in seen)
    assert gc.get_threshold() == before
