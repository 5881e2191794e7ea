"""Article parsers (PDF, Markdown, plain text, HTML) on committed fixtures and files made in tmp_path."""

import logging
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from memory_pipeline.errors import ParseError
from memory_pipeline.records import Kind, sha256_bytes, stable_id
from memory_pipeline.sources import parse_file
from memory_pipeline.sources.html import parse_html
from memory_pipeline.sources.markdown import parse_markdown
from memory_pipeline.sources.pdf import parse_pdf
from memory_pipeline.sources.text import parse_plain_text

FIXTURES = Path(__file__).parent / "fixtures" / "articles"


def _one(parser, path: Path):
    docs = list(parser(path))
    assert len(docs) == 1
    doc = docs[0]
    assert doc.kind is Kind.ARTICLE and doc.content_hash and doc.sections
    return doc


def _body(doc) -> str:
    return doc.body_text()


# --- PDF ---------------------------------------------------------------------------------------


def test_pdf_sections_keep_page_numbers_headings_and_metadata():
    doc = _one(parse_pdf, FIXTURES / "marathon_pacing.pdf")
    assert doc.format == "pdf"
    assert doc.title == "Marathon pacing notes"
    assert doc.created_at == datetime.fromisoformat("2024-03-15T09:00:00+00:00")
    assert doc.metadata["pages"] == "2" and doc.metadata["author"] == "Memory Pipeline fixtures"
    assert [(s.page, s.heading_path) for s in doc.sections] == [(1, ["Темп марафона"]), (2, ["Long run"])]
    first = doc.sections[0].text
    assert first.startswith("Первая половина марафона должна быть чуть медленнее второй.")
    # two paragraphs: wrapped lines joined, the paragraph gap kept
    assert first.count("\n\n") == 1 and "\n" not in first.replace("\n\n", "")


def test_pdf_dehyphenates_line_breaks_and_drops_page_number_footers():
    doc = _one(parse_pdf, FIXTURES / "marathon_pacing.pdf")
    body = _body(doc)
    assert "carefully planned schedule." in body and "sched-" not in body
    assert not any(re.search(r"(^|\n)\d+($|\n)", s.text) for s in doc.sections)


def test_pdf_without_title_metadata_takes_its_first_line():
    doc = _one(parse_pdf, FIXTURES / "untitled.pdf")
    assert doc.title == "Recovery after a race"
    assert doc.sections[0].text.startswith("Walk for ten minutes")


def test_pdf_with_owner_password_only_opens_with_the_empty_password():
    doc = _one(parse_pdf, FIXTURES / "owner_only.pdf")
    assert doc.sections[1].heading_path == ["Long run"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("encrypted.pdf", "encrypted PDF (password required)"),
        ("truncated.pdf", "corrupt PDF: truncated"),
        ("scanned.pdf", "no extractable text (scanned PDF? OCR it first)"),
    ],
)
def test_unreadable_pdfs_raise_parse_error_naming_file_and_reason(name, reason):
    with pytest.raises(ParseError) as caught:
        list(parse_pdf(FIXTURES / name))
    assert caught.value.path.endswith(name)
    assert caught.value.reason.startswith(reason)
    assert name in str(caught.value)


def test_file_that_is_not_a_pdf_is_corrupt(tmp_path):
    fake = tmp_path / "report.pdf"
    fake.write_bytes(b"<html>this was saved from a browser</html>")
    with pytest.raises(ParseError, match=r"report\.pdf: corrupt PDF: no %PDF- header"):
        list(parse_pdf(fake))


def test_pypdf_warnings_become_one_message(tmp_path, caplog):
    data = (FIXTURES / "untitled.pdf").read_bytes()
    tail = data.rindex(b"startxref")
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(data[:tail] + re.sub(rb"startxref\s+\d+", b"startxref\n999", data[tail:]))
    with caplog.at_level(logging.WARNING):
        doc = _one(parse_pdf, damaged)
    assert doc.sections[0].text.startswith("Walk for ten minutes")
    assert [r.name for r in caplog.records] == ["memory_pipeline.sources.pdf"]
    assert "damaged.pdf" in caplog.records[0].getMessage() and "startxref" in caplog.records[0].getMessage()
    assert "startxref" in doc.metadata["parse_warnings"]


def test_doc_id_is_by_content_so_a_moved_file_keeps_it(tmp_path):
    source = FIXTURES / "marathon_pacing.pdf"
    moved = tmp_path / "elsewhere" / "renamed.pdf"
    moved.parent.mkdir()
    shutil.copy(source, moved)
    original, copy = _one(parse_pdf, source), _one(parse_pdf, moved)
    assert original.doc_id == copy.doc_id == stable_id("pdf", sha256_bytes(source.read_bytes()))
    assert original.source_hash == copy.source_hash and copy.source_path == str(moved)


# --- Markdown ----------------------------------------------------------------------------------


def test_markdown_heading_paths_front_matter_and_code_blocks():
    doc = _one(parse_markdown, FIXTURES / "training_notes.md")
    assert doc.format == "markdown"
    assert doc.title == "Base training notes"
    assert doc.created_at == datetime(2024, 2, 10)
    assert doc.metadata == {"tags": "running, base"}
    assert [s.heading_path for s in doc.sections] == [
        [],
        ["Aerobic base"],
        ["Aerobic base", "Easy runs"],
        ["Aerobic base", "Easy runs", "Drills"],
        ["Aerobic base", "Long runs"],
        ["Aerobic base", "Интервалы"],
    ]
    drills = doc.sections[3].text
    assert "# not a heading: this is a shell comment" in drills and drills.endswith("```")
    assert "title:" not in _body(doc) and "---" not in _body(doc)


def test_markdown_title_falls_back_to_first_h1_then_file_stem(tmp_path):
    with_h1 = tmp_path / "note.md"
    with_h1.write_text("Preface line.\n\n# Heart rate zones\n\nZone 2 is easy.\n", encoding="utf-8")
    assert _one(parse_markdown, with_h1).title == "Heart rate zones"
    no_heading = tmp_path / "strength_work_for_runners.md"
    no_heading.write_text("Squats and lunges twice a week.\n", encoding="utf-8")
    doc = _one(parse_markdown, no_heading)
    assert doc.title == "strength work for runners"
    assert doc.sections[0].heading_path == []


def test_markdown_tilde_fences_hide_headings(tmp_path):
    note = tmp_path / "fences.md"
    note.write_text("# Top\n\n~~~\n## inside fence\n~~~\n\n## Real\n\nText.\n", encoding="utf-8")
    doc = _one(parse_markdown, note)
    assert [s.heading_path for s in doc.sections] == [["Top"], ["Top", "Real"]]
    assert "## inside fence" in doc.sections[0].text


def test_markdown_with_windows_line_ends_parses_the_same(tmp_path):
    source = FIXTURES / "training_notes.md"
    crlf = tmp_path / "training_notes.md"
    crlf.write_bytes(source.read_bytes().replace(b"\n", b"\r\n"))
    original, windows = _one(parse_markdown, source), _one(parse_markdown, crlf)
    assert (windows.title, windows.created_at, windows.sections) == (
        original.title,
        original.created_at,
        original.sections,
    )


# --- Plain text --------------------------------------------------------------------------------


def test_plain_text_title_headings_and_paragraphs():
    doc = _one(parse_plain_text, FIXTURES / "plain_notes.txt")
    assert doc.format == "text" and doc.title == "Notes on recovery"
    assert [s.heading_path for s in doc.sections] == [[], ["Nutrition"]]
    assert doc.sections[1].text == (
        "Eat carbohydrates and protein within an hour.\n\nHydration matters too: drink small amounts during the day."
    )
    assert "Notes on recovery" not in _body(doc)


def test_plain_text_with_a_long_first_line_is_titled_by_its_file_name(tmp_path):
    path = tmp_path / "long_run_thoughts.txt"
    path.write_text("Long runs " * 20 + "\n\nSecond paragraph.\n", encoding="utf-8")
    doc = _one(parse_plain_text, path)
    assert doc.title == "long run thoughts"
    assert doc.sections[0].text.startswith("Long runs Long runs")


def test_cp1251_russian_text_is_decoded():
    doc = _one(parse_plain_text, FIXTURES / "cp1251_russian.txt")
    assert doc.title == "Заметки о восстановлении"
    assert "Сон — главный инструмент восстановления" in _body(doc)
    assert doc.repair.source_encoding == "cp1251" and doc.language == "ru"


def test_mojibake_text_is_repaired():
    doc = _one(parse_plain_text, FIXTURES / "mojibake.txt")
    assert doc.title == "Пульсовые зоны"
    assert "Вторая пульсовая зона — это лёгкий бег" in _body(doc)
    assert doc.repair.repaired and doc.repair.codec == "mac_roman"


# --- HTML --------------------------------------------------------------------------------------


def test_html_keeps_the_article_and_drops_page_noise():
    doc = _one(parse_html, FIXTURES / "noisy_page.html")
    assert doc.format == "html" and doc.title == "Marathon taper explained"
    body = _body(doc)
    for noise in (
        "RunBlog",
        "Subscribe",
        "Home",
        "Training plans",
        "Popular posts",
        "tracking",
        "font-family",
        "Share on social",
        "Enable JavaScript",
        "newsletter",
        "All rights reserved",
    ):
        assert noise not in body, noise
    assert [s.heading_path for s in doc.sections] == [
        ["Marathon taper explained"],
        ["Marathon taper explained", "Volume"],
        ["Marathon taper explained", "Intensity"],
    ]
    assert "Cut weekly volume by about forty percent.\nKeep the long run short." in body
    assert "- Week 3: 80% volume\n- Week 2: 60% volume\n- Week 1: 40% volume" in body
    assert "Keep some speed, or the legs go flat." in body
    assert "pace = goal_time / 42.195" in body and "Tue | 3 × 1 km at race pace" in body


def test_html_charset_from_meta_is_honoured():
    doc = _one(parse_html, FIXTURES / "cp1251_page.html")
    assert doc.title == "Интервальная тренировка"
    assert _body(doc) == "Интервалы по 1000 метров развивают МПК."
    assert doc.repair.source_encoding == "windows-1251"


def test_html_without_article_uses_main_then_body(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>Hill repeats</title></head><body><nav>Menu</nav>"
        "<div role='main'><p>Run up for 60 seconds, jog down.</p></div><footer>Footer</footer></body></html>",
        encoding="utf-8",
    )
    doc = _one(parse_html, page)
    assert doc.title == "Hill repeats" and _body(doc) == "Run up for 60 seconds, jog down."
    bare = tmp_path / "bare.html"
    bare.write_text("<p>Just a paragraph.</p>", encoding="utf-8")
    doc = _one(parse_html, bare)
    assert doc.title == "bare" and _body(doc) == "Just a paragraph."


def test_html_with_no_text_in_main_content_is_an_error(tmp_path):
    page = tmp_path / "empty.html"
    page.write_text("<html><body><nav>Only a menu</nav><script>x()</script></body></html>", encoding="utf-8")
    with pytest.raises(ParseError, match=r"empty\.html: no text"):
        list(parse_html(page))


# --- Bad input through parse_file --------------------------------------------------------------


def test_empty_file_is_refused_by_parse_file(tmp_path):
    for name in ("empty.md", "empty.txt", "empty.pdf", "empty.html"):
        path = tmp_path / name
        path.write_bytes(b"")
        with pytest.raises(ParseError, match=rf"{re.escape(name)}: empty file"):
            list(parse_file(path, Kind.ARTICLE))


def test_binary_file_with_txt_extension_names_the_file():
    with pytest.raises(ParseError) as caught:
        list(parse_file(FIXTURES / "binary.txt", Kind.ARTICLE))
    assert caught.value.path.endswith("binary.txt") and "binary" in caught.value.reason


def test_parse_file_dispatches_every_article_fixture():
    formats = {
        path.name: next(parse_file(path, Kind.ARTICLE)).format
        for path in [
            FIXTURES / "marathon_pacing.pdf",
            FIXTURES / "training_notes.md",
            FIXTURES / "plain_notes.txt",
            FIXTURES / "noisy_page.html",
        ]
    }
    assert formats == {
        "marathon_pacing.pdf": "pdf",
        "training_notes.md": "markdown",
        "plain_notes.txt": "text",
        "noisy_page.html": "html",
    }
