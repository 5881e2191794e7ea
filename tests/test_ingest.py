"""Incremental ingestion into the real LanceDB document store, in tmp dirs."""

import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from memory_pipeline import sources
from memory_pipeline.cli import app
from memory_pipeline.config import Config
from memory_pipeline.ingest import pipeline as ingest
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all, ingest_kind, load_reports
from memory_pipeline.ingest.watch import pending_changes
from memory_pipeline.records import Kind

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture()
def corpus(tmp_path) -> Config:
    articles = tmp_path / "articles"
    articles.mkdir()
    (articles / "a.md").write_text(
        "# Бег\n\nЛёгкий бег развивает аэробную базу.\n\n## Темп\n\nДержи разговорный темп.\n", encoding="utf-8"
    )
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


def test_a_failed_file_is_not_parsed_again_until_it_changes_and_the_sensor_sees_no_change(corpus, monkeypatch):
    folder = corpus.sources.articles[0]
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    first = ingest_kind(corpus, Kind.ARTICLE)
    assert [Path(e.path).name for e in first.errors] == ["binary.txt"]
    parsed: list[str] = []
    real_parse = ingest.parse_file

    def counted_parse(path, kind, **options):
        parsed.append(Path(path).name)
        return real_parse(path, kind, **options)

    monkeypatch.setattr(ingest, "parse_file", counted_parse)
    again = ingest_kind(corpus, Kind.ARTICLE)
    assert parsed == [] and again.files_failed == 1
    assert [(Path(e.path).name, e.reason) for e in again.errors] == [
        (Path(e.path).name, e.reason) for e in first.errors
    ]
    assert pending_changes(corpus).empty
    (folder / "binary.txt").write_text("Fixed notes\n\nNow plain text.\n", encoding="utf-8")
    assert [Path(p).name for p in pending_changes(corpus).changed["article"]] == ["binary.txt"]
    fixed = ingest_kind(corpus, Kind.ARTICLE)
    assert parsed == ["binary.txt"] and (fixed.files_parsed, fixed.errors) == (1, [])


def test_a_file_over_the_size_limit_is_refused_unread_and_retried_when_the_limit_allows(corpus, monkeypatch):
    folder = corpus.sources.articles[0]
    (folder / "big.md").write_text("# Big\n\n" + "x" * 10_000)
    corpus.ingest.max_file_mb = 0.005
    hashed: list[str] = []
    real_fingerprint = sources.SourceUnit.fingerprint

    def counted_fingerprint(unit):
        hashed.append(unit.path.name)
        return real_fingerprint(unit)

    monkeypatch.setattr(sources.SourceUnit, "fingerprint", counted_fingerprint)
    refused = ingest_kind(corpus, Kind.ARTICLE)
    assert [(Path(e.path).name, "size limit" in e.reason) for e in refused.errors] == [("big.md", True)]
    assert "big.md" not in hashed
    assert pending_changes(corpus).empty
    assert ingest_kind(corpus, Kind.ARTICLE).files_failed == 1
    corpus.ingest.max_file_mb = 1
    allowed = ingest_kind(corpus, Kind.ARTICLE)
    assert (allowed.files_parsed, allowed.errors) == (1, []) and "Big" in _titles(corpus)


def test_a_run_limited_to_some_paths_keeps_the_other_failures_in_the_saved_report(corpus):
    folder = corpus.sources.articles[0]
    (folder / "empty.md").write_text("")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    ingest_kind(corpus, Kind.ARTICLE)
    (folder / "c.md").write_text("# Сон\n\nСон важнее тренировки.\n", encoding="utf-8")
    limited = ingest_kind(corpus, Kind.ARTICLE, paths=[folder / "c.md"])
    assert (limited.files_parsed, limited.errors) == (1, [])
    saved = load_reports(corpus)["article"]
    assert sorted(Path(e.path).name for e in saved.errors) == ["binary.txt", "empty.md"] and saved.files_failed == 2
    (folder / "empty.md").unlink()
    (folder / "binary.txt").write_text("Fixed\n\nPlain text now.\n", encoding="utf-8")
    ingest_kind(corpus, Kind.ARTICLE, paths=[folder / "binary.txt"])
    assert load_reports(corpus)["article"].errors == []


def test_cli_ingests_a_mixed_folder_by_format_and_names_a_missing_path(tmp_path):
    exports = tmp_path / "exports"
    (exports / "nested" / "deeper").mkdir(parents=True)
    for name in (
        "articles/marathon_pacing.pdf",
        "articles/plain_notes.txt",
        "articles/training_notes.md",
        "lectures/coach_talk.srt",
    ):
        shutil.copy(FIXTURES / name, exports)
    for name in ("dialogues/chatgpt_single.json", "dialogues/nexus/front_matter.md", "lectures/timed_transcript.txt"):
        shutil.copy(FIXTURES / name, exports / "nested")
    shutil.copy(FIXTURES / "dialogues/nexus/Марафон за 4 часа.md", exports / "nested" / "deeper")
    shutil.copytree(FIXTURES / "dialogues/nexus/Марафон за 4 часа", exports / "nested" / "deeper" / "Марафон за 4 часа")
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(
        yaml.safe_dump({"storage_root": "storage", "sources": {"dialogues": [], "articles": [], "lectures": []}})
    )
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
        Kind.PROFILE: [],
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


def test_the_same_conversation_in_two_exports_keeps_the_later_moment_not_the_later_clock(tmp_path):
    """12:00 UTC is later than 14:30 at +03:00 (11:30 UTC): compared after dropping the offsets unconverted,
    the older copy would win."""
    folder = tmp_path / "chats"
    folder.mkdir()

    def export(name: str, stamp: str) -> None:
        turns = [("user", "Как бежать марафон?"), ("assistant", "Ровно, с первой половины не спеша.")]
        lines = [
            f'{{"conversation_id": "c1", "role": "{role}", "content": "{text}", "timestamp": "{stamp}"}}'
            for role, text in turns
        ]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    export("utc.jsonl", "2025-03-01T12:00:00+00:00")
    export("moscow.jsonl", "2025-03-01T14:30:00+03:00")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    assert ingest_kind(config, Kind.DIALOGUE).errors == []
    (row,) = DocumentStore(config.documents_dir).summary_rows(Kind.DIALOGUE)
    assert row["source_path"].endswith("utc.jsonl")


def test_ingest_collects_young_objects_rarely_and_restores_the_thresholds(corpus, monkeypatch):
    """Batch runs raise the GC's first threshold (1,366 collections of an 18 s ingest of 10k dialogues) and
    give the process its own back, also when the run fails."""
    import gc

    from memory_pipeline.batch_gc import YOUNG_OBJECTS, rare_young_collections

    before = gc.get_threshold()
    seen: list[int] = []
    parse = ingest.parse_file

    def recording(*args, **kwargs):
        seen.append(gc.get_threshold()[0])
        return parse(*args, **kwargs)

    monkeypatch.setattr(ingest, "parse_file", recording)
    ingest_all(corpus)
    assert seen and all(threshold >= YOUNG_OBJECTS for threshold in seen)
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), rare_young_collections():
        raise RuntimeError("a failed run")
    assert gc.get_threshold() == before
