"""Parsing split into source-path hash ranges and embedding into document-hash ranges: every source and
document in exactly one range, and the commit after the ranges parses or embeds nothing itself."""

from collections import Counter
from pathlib import Path

import pytest

from memory_pipeline.config import Config
from memory_pipeline.index import fanout
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.fanout import documents_to_index, embed_partition, partition_of
from memory_pipeline.index.sync import sync_index
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.fanout import parse_partition
from memory_pipeline.ingest.pipeline import ingest_all

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_hash_ranges_are_stable_and_even():
    counts = Counter(partition_of(f"doc-{n}", 4) for n in range(4000))
    assert sorted(counts) == [0, 1, 2, 3] and all(900 < c < 1100 for c in counts.values())
    assert {partition_of(f"doc-{n}", 1) for n in range(100)} == {0}
    assert [partition_of("doc-7", 4) for _ in range(3)] == [partition_of("doc-7", 4)] * 3


@pytest.mark.slow  # real ingest and MiniLM embeddings
def test_ranges_embed_each_document_once_and_the_commit_only_writes(tmp_path):
    sources = {
        "dialogues": [FIXTURES / "dialogues" / "chatgpt_single.json", FIXTURES / "dialogues" / "claude_export.json"],
        "lectures": [FIXTURES / "lectures" / "coach_talk.srt"],
        "articles": [FIXTURES / "articles" / "training_notes.md"],
    }
    config = Config(storage_root=tmp_path / "storage", sources=sources)
    ingest_all(config)
    docstore = DocumentStore(config.documents_dir)
    embedder = load_embedder(config.embedding)
    todo = documents_to_index(config, docstore, embedder.model_id)
    reports = [embed_partition(config, docstore, embedder, p, 3, log=lambda message: None) for p in range(3)]
    assert sum(r.documents for r in reports) == len(todo) > 3
    assert all(0 < r.embedded + r.cache_hits <= r.chunks for r in reports if r.documents)

    report = sync_index(config, docstore, embedder, progress=False)
    assert report.embedded == 0 and report.cache_hits > 0 and report.chunks_total > 0
    assert documents_to_index(config, docstore, embedder.model_id) == []


@pytest.mark.slow  # real ingest and MiniLM embeddings
def test_with_claims_the_first_step_takes_every_free_batch_and_later_steps_find_none(tmp_path, monkeypatch):
    """As when dask runs one range step while another worker idles: the step helps with the other ranges."""
    monkeypatch.setattr(fanout, "DOC_BATCH", 1)  # one claim per document
    sources = {"dialogues": [FIXTURES / "dialogues"], "lectures": [FIXTURES / "lectures"]}
    config = Config(storage_root=tmp_path / "storage", sources=sources)
    ingest_all(config)
    docstore = DocumentStore(config.documents_dir)
    embedder = load_embedder(config.embedding)
    todo = documents_to_index(config, docstore, embedder.model_id)
    earlier = fanout.claims_dir(config, "an-earlier-run")
    earlier.mkdir(parents=True)
    (earlier / "0-0").touch()
    claims = fanout.claims_dir(config, "this-run")
    quiet = {"claims": claims, "log": lambda message: None}
    first = embed_partition(config, docstore, embedder, 1, 3, **quiet)
    later = [embed_partition(config, docstore, embedder, p, 3, **quiet) for p in (0, 2)]
    assert first.documents == len(todo) > 3 and first.embedded > 0
    assert all(r.documents == r.embedded == 0 for r in later)
    assert len(list(claims.iterdir())) == len(todo) and not earlier.exists()

    report = sync_index(config, docstore, embedder, progress=False)
    assert report.embedded == 0 and report.chunks_total > 0


def test_parse_ranges_stage_each_source_once_and_the_commit_parses_nothing(tmp_path):
    sources = {
        "dialogues": [FIXTURES / "dialogues", FIXTURES / "nexus_obsidian"],
        "lectures": [FIXTURES / "lectures"],
        "articles": [FIXTURES / "articles"],
    }
    plain = Config(storage_root=tmp_path / "plain", sources=sources)
    plain_reports = ingest_all(plain)
    fanned = Config(storage_root=tmp_path / "fanned", sources=sources)
    reports = [parse_partition(fanned, p, 3, log=lambda message: None) for p in range(3)]
    assert all(r.staged for r in reports)
    assert sum(r.staged + r.left_to_commit for r in reports) == sum(r.files_seen for r in plain_reports.values())

    fanned_reports = ingest_all(fanned)
    assert sum(r.files_staged for r in fanned_reports.values()) == sum(r.staged for r in reports)
    for kind, report in fanned_reports.items():  # the same files parsed and failed, the same documents
        same = ("files_parsed", "files_failed", "documents_total", "documents_written", "repaired_documents")
        assert {f: getattr(report, f) for f in same} == {f: getattr(plain_reports[kind], f) for f in same}
    stored = [DocumentStore(c.documents_dir) for c in (plain, fanned)]
    assert [{d.doc_id: d.model_dump_json() for d in s.iter_documents()} for s in stored] == [
        {d.doc_id: d.model_dump_json() for d in stored[0].iter_documents()}
    ] * 2
    assert not any(fanned.parsed_dir.rglob("*.jsonl"))  # the commits took and cleared the staging

    # A second pass finds nothing changed: no range stages anything.
    assert sum(r.staged for r in (parse_partition(fanned, p, 3, log=lambda message: None) for p in range(3))) == 0
