"""Incremental ingestion into the real LanceDB document store, in tmp dirs."""

import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from memory_pipeline.cli import app
from memory_pipeline.config import Config
from memory_pipeline.docstore import DocumentStore
from memory_pipeline.ingest import ingest_all, ingest_kind, load_reports
from memory_pipeline.records import Kind

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture()
def corpus(tmp_path) -> Config:
    articles = tmp_path / "articles"
    articles.mkdir()
    (articles / "a.md").write_text("# Бег\n\nЛёгкий бег развивает аэробную базу.\n\n## Темп\n\nДержи разговорный темп.\n", encoding="utf-8")
    (articles / "b.txt").write_text("Notes on pacing\n\nStart slow, finish strong.\n", encoding="utf-8")
    return Config(storage_root=tmp_path / "storage", sources={"articles": [articles]})


def _titles(config: Config) -> set[str]:
    return {row["title"] for row in DocumentStore(config.documents_dir).summary_rows(Kind.ARTICLE)}


def test_first_run_stores_documents_and_second_run_parses_nothing(corpus):
    first = ingest_kind(corpus, Kind.ARTICLE)
    assert (first.files_parsed, first.documents_total, first.errors) == (2, 2, [])
    second = ingest_kind(corpus, Kind.ARTICLE)
    assert (second.files_parsed, second.files_unchanged, second.documents_written) == (0, 2, 0)


def test_touched_or_moved_file_is_not_reparsed_into_a_new_document(corpus):
    ingest_kind(corpus, Kind.ARTICLE)
    folder = corpus.sources.articles[0]
    ids_before = set(DocumentStore(corpus.documents_dir).content_hashes(Kind.ARTICLE))
    os.utime(folder / "a.md", ns=(1, 1))
    touched = ingest_kind(corpus, Kind.ARTICLE)
    assert touched.files_parsed == 0
    (folder / "sub").mkdir()
    (folder / "b.txt").rename(folder / "sub" / "b-moved.txt")
    moved = ingest_kind(corpus, Kind.ARTICLE)
    assert (moved.files_parsed, moved.files_moved, moved.files_removed, moved.documents_total) == (0, 1, 0, 2)
    assert set(DocumentStore(corpus.documents_dir).content_hashes(Kind.ARTICLE)) == ids_before
    paths = {row["source_path"] for row in DocumentStore(corpus.documents_dir).summary_rows(Kind.ARTICLE)}
    assert paths == {str(folder / "a.md"), str(folder / "sub" / "b-moved.txt")}
    assert ingest_kind(corpus, Kind.ARTICLE).files_unchanged == 2


def test_a_renamed_file_titled_after_its_name_is_parsed_for_its_new_title(corpus):
    folder = corpus.sources.articles[0]
    (folder / "easy_runs.md").write_text("Лёгкий бег каждый день.\n", encoding="utf-8")
    ingest_kind(corpus, Kind.ARTICLE)
    (folder / "easy_runs.md").rename(folder / "recovery_runs.md")
    renamed = ingest_kind(corpus, Kind.ARTICLE)
    assert (renamed.files_parsed, renamed.files_moved, renamed.files_removed) == (1, 0, 1)
    assert "recovery runs" in _titles(corpus) and "easy runs" not in _titles(corpus)


def test_changed_file_replaces_its_document_and_deleted_file_removes_it(corpus):
    ingest_kind(corpus, Kind.ARTICLE)
    folder = corpus.sources.articles[0]
    (folder / "a.md").write_text("# Плавание\n\nДругой текст.\n", encoding="utf-8")
    changed = ingest_kind(corpus, Kind.ARTICLE)
    assert changed.documents_total == 2 and changed.documents_removed == 1
    assert "Плавание" in _titles(corpus) and "Бег" not in _titles(corpus)
    (folder / "b.txt").unlink()
    deleted = ingest_kind(corpus, Kind.ARTICLE)
    assert deleted.documents_total == 1 and deleted.files_removed == 1


def test_bad_files_are_reported_by_name_and_reason_while_others_ingest(corpus):
    folder = corpus.sources.articles[0]
    (folder / "empty.md").write_text("")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (folder / "notes.xyz").write_text("what is this")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<<")
    corpus.ingest.max_file_mb = 0.005
    (folder / "big.md").write_text("# Big\n\n" + "x" * 10_000)
    report = ingest_kind(corpus, Kind.ARTICLE)
    reasons = {Path(e.path).name: e.reason for e in report.errors}
    assert set(reasons) == {"empty.md", "binary.txt", "notes.xyz", "broken.pdf", "big.md"}
    assert "empty" in reasons["empty.md"]
    assert "binary" in reasons["binary.txt"]
    assert "extension" in reasons["notes.xyz"]
    assert "size limit" in reasons["big.md"]
    assert report.documents_total == 2


def test_a_file_that_goes_bad_keeps_what_was_stored(corpus):
    ingest_kind(corpus, Kind.ARTICLE)
    folder = corpus.sources.articles[0]
    (folder / "a.md").write_bytes(b"\x00\x01\x02" * 100)
    report = ingest_kind(corpus, Kind.ARTICLE)
    assert report.files_failed == 1 and report.documents_total == 2
    assert "Бег" in _titles(corpus)


def test_cli_ingests_a_mixed_folder_by_format_and_names_a_missing_path(tmp_path):
    exports = tmp_path / "exports"
    (exports / "nested" / "deeper").mkdir(parents=True)
    for name in ("articles/marathon_pacing.pdf", "articles/plain_notes.txt", "articles/training_notes.md", "lectures/coach_talk.srt"):
        shutil.copy(FIXTURES / name, exports)
    for name in ("dialogues/chatgpt_single.json", "dialogues/nexus/front_matter.md", "lectures/timed_transcript.txt"):
        shutil.copy(FIXTURES / name, exports / "nested")
    shutil.copy(FIXTURES / "dialogues/nexus/Марафон за 4 часа.md", exports / "nested" / "deeper")
    shutil.copytree(FIXTURES / "dialogues/nexus/Марафон за 4 часа", exports / "nested" / "deeper" / "Марафон за 4 часа")
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(yaml.safe_dump({"storage_root": "storage", "sources": {"dialogues": [], "articles": [], "lectures": []}}))
    missing = tmp_path / "not_there.json"
    result = CliRunner().invoke(app, ["--config", str(config_file), "ingest", "--no-index", str(exports), str(missing)])
    assert result.exit_code == 1
    assert f"{missing}: does not exist" in " ".join(result.output.split())
    store = DocumentStore(tmp_path / "storage" / "documents")
    formats = {kind: sorted({row["format"] for row in store.summary_rows(kind)}) for kind in Kind}
    assert formats == {
        Kind.ARTICLE: ["markdown", "pdf", "text"],
        Kind.DIALOGUE: ["chatgpt_json", "nexus_md"],
        Kind.LECTURE: ["srt", "transcript"],
    }
    assert len([r for r in store.summary_rows(Kind.DIALOGUE) if r["format"] == "nexus_md"]) == 2
    assert all(r.errors == [] for r in load_reports(Config(storage_root=tmp_path / "storage")).values())


def test_paths_restrict_the_run_and_route_to_the_right_kind(corpus, tmp_path):
    outside = tmp_path / "lecture.srt"
    outside.write_text("1\n00:00:01,000 --> 00:00:03,000\nПривет, это лекция о беге.\n", encoding="utf-8")
    reports = ingest_all(corpus, paths=[outside])
    assert list(reports) == [Kind.LECTURE]
    assert reports[Kind.LECTURE].documents_total == 1
    assert DocumentStore(corpus.documents_dir).count(Kind.ARTICLE) == 0
