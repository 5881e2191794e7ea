"""Text repair: double-encoding is undone exactly, correct text of any language is left alone."""

import re
from pathlib import Path

import pytest

from memory_pipeline.errors import ParseError
from memory_pipeline.text_repair import clean_text, decode_bytes, read_text_file, repair_many, repair_text

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "repair"
SAMPLES = sorted(FIXTURES.glob("*.md"))

RUSSIAN = "Но вот по чисто знаниям ИИ стэка — я отстаю сильно, всё для меня ново. Съешь ещё этих булок, Нина!"
ENGLISH_ACCENTS = "The café in Zürich served a naïve crème brûlée — “déjà vu”, said Müller. Señor Ærø’s piñata: 5 €."


def misdecode(text: str, codec: str) -> str:
    """The accident itself: UTF-8 bytes read as a single-byte codec (cp1252 as browsers do it,
    keeping its undefined bytes as C1 controls)."""
    data = text.encode("utf-8")
    if codec == "cp1252":
        return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in data)
    return data.decode(codec)


def oracle(text: str) -> str:
    return "\n".join(line.encode("mac_roman").decode("utf-8") for line in text.split("\n"))


def test_fixture_samples_are_present():
    assert len(SAMPLES) == 4


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_nexus_samples_repair_fully_and_exactly(path):
    garbled = path.read_text(encoding="utf-8")
    repaired, report = repair_text(garbled)
    assert repaired == oracle(garbled)
    assert report.repaired and report.codec == "mac_roman"
    assert report.lines_repaired == sum(1 for line in garbled.split("\n") if not line.isascii())
    assert not re.search(r"–[^\s\d]|Ã|Ð|‚Ä", repaired)
    assert len(re.findall("[а-яё]", repaired, re.IGNORECASE)) > 1000
    assert ">[!nexus_user] **User**" in repaired


@pytest.mark.parametrize("codec", ["cp1252", "latin-1", "mac_roman"])
@pytest.mark.parametrize("original", [RUSSIAN, ENGLISH_ACCENTS], ids=["russian", "english"])
def test_synthetic_double_encoding_repairs_exactly(codec, original):
    garbled = misdecode(original, codec)
    assert garbled != original
    repaired, report = repair_text(garbled)
    assert repaired == original
    assert report.repaired and report.lines_repaired == 1


def test_codec_is_identified():
    assert repair_text(misdecode(RUSSIAN, "cp1252"))[1].codec == "cp1252"
    assert repair_text(misdecode(RUSSIAN, "latin-1"))[1].codec == "latin-1"
    assert repair_text(misdecode(RUSSIAN, "mac_roman"))[1].codec == "mac_roman"


def test_cp1252_undefined_bytes_kept_as_c1_controls_are_recovered():
    # с, я, э, Н, А end in 0x81, 0x8F, 0x8D, 0x9D, 0x90: bytes cp1252 leaves undefined
    original = "сямэ Нина Анна сэр"
    garbled = misdecode(original, "cp1252")
    assert {"\x81", "\x8f", "\x8d", "\x9d", "\x90"} <= set(garbled)
    assert repair_text(garbled)[0] == original


CORRECT_TEXTS = {
    "russian": RUSSIAN + "\n«Ёлка» — 3–5 км, №7.",
    "english": "Plain English — with “smart quotes”, an ellipsis… and 10° ± 2°.",
    "emoji": "Готово ✅ 🧩 👨‍👩‍👧 ⚠️ 🚴",
    "cjk": "中文 日本語のテキスト 한국어 문장",
    "french": "L’été à Paris : « Ça va ? » — “élan”, déjà vu, CAFÉ’S, où, naïve, garçon.",
    "german": "Müller aß Äpfel „Über“ die Straße; Öl für ÄRGER.",
    "vietnamese_spanish": "Tiếng Việt đẹp; ¿Qué tal, señor? ¡Hola! año niño",
    "greek_hebrew_arabic": "λόγος Ελληνικά שלום עולם مرحبا",
    "quotes_mojibake": "Почему токенизатор выдаёт Ð¿Ñ€Ð¸Ð²ÐµÑ‚ и Ã© вместо «привет» и é?",
    "quotes_mojibake_in_code": "In the GPT-2 vocabulary `Ã©` is é and `Ð¿Ñ€Ð¸Ð²ÐµÑ‚` is привет.",
    "fenced_mojibake": "Byte-level BPE:\n```\nÃ© -> é\nâ€™ -> ’\n```\nThat is expected.",
}


@pytest.mark.parametrize("text", CORRECT_TEXTS.values(), ids=CORRECT_TEXTS.keys())
def test_correct_text_comes_back_byte_identical(text):
    repaired, report = repair_text(text)
    assert repaired.encode("utf-8") == text.encode("utf-8")
    assert not report.repaired and report.codec is None and report.lines_repaired == 0


def test_correct_nexus_sample_is_not_repaired_again():
    correct = oracle(SAMPLES[0].read_text(encoding="utf-8"))
    assert repair_text(correct) == (correct, repair_text(correct)[1])
    assert not repair_text(correct)[1].repaired


def test_mixed_file_repairs_only_the_garbled_lines():
    lines = [
        "# Notes",
        "plain ascii line",
        misdecode("Это строка — с эмодзи", "mac_roman") + " ✅ 🧩 done",
        "```python",
        "print('hello')  # " + misdecode("комментарий", "mac_roman"),
        "```",
        misdecode("ещё одна строка", "mac_roman"),
        "",
    ]
    repaired, report = repair_text("\r\n".join(lines))
    assert repaired == "\r\n".join(
        [
            "# Notes",
            "plain ascii line",
            "Это строка — с эмодзи ✅ 🧩 done",
            "```python",
            "print('hello')  # комментарий",
            "```",
            "ещё одна строка",
            "",
        ]
    )
    assert report.codec == "mac_roman" and report.lines_repaired == 3


def test_one_round_only_keeps_mojibake_the_author_quoted():
    original = "Вопрос: почему в словаре `Ã©`, а не é?\nОтвет: это байты UTF-8, прочитанные как cp1252."
    repaired, report = repair_text(misdecode(original, "cp1252"))
    assert repaired == original
    assert report.codec == "cp1252"


def test_repair_many_makes_one_decision_for_the_group():
    originals = ["Привет!", "ok", "в", "Как дела? Всё хорошо."]
    # "–≤" alone reads like two symbols; the group decision repairs it with the rest
    repaired, report = repair_many([misdecode(t, "mac_roman") for t in originals])
    assert repaired == originals
    assert report.repaired and report.codec == "mac_roman" and report.lines_repaired == 3
    assert repair_text(misdecode("в", "mac_roman"))[0] == "–≤"


def test_repair_many_leaves_a_correct_conversation_alone():
    messages = ["Что значит `Ã©` в словаре токенизатора?", "Это é, прочитанное как cp1252: Ã©.", "Ясно, спасибо!"]
    repaired, report = repair_many(messages)
    assert repaired == messages
    assert not report.repaired


def test_repair_many_merges_cleaning_and_nfc():
    repaired, report = repair_many(["\ufeffstart", "cafe\u0301", "a\u200bb"])
    assert repaired == ["start", "café", "ab"]
    assert report.junk_removed == 2 and report.normalized_nfc and not report.repaired


def test_clean_text_strips_junk_and_keeps_joiners_and_line_endings():
    text = "\ufeffa\u200bb\u2060c\x00d\x07e\x1bf\x7fg\x85h\x9di\ufeff\r\n\tj\u200dk\u200cl\n"
    cleaned, removed = clean_text(text)
    assert cleaned == "abcdefghi\r\n\tj\u200dk\u200cl\n"
    assert removed == 10
    assert clean_text("👨\u200d👩\u200d👧 می\u200cخواهم") == ("👨\u200d👩\u200d👧 می\u200cخواهم", 0)


def test_repair_text_strips_bom_after_undoing_and_normalizes_nfc():
    repaired, report = repair_text(misdecode("\ufeffПривет, мир", "cp1252"))
    assert repaired == "Привет, мир"
    assert report.repaired and report.junk_removed == 1

    repaired, report = repair_text("cafe\u0301 and Ame\u0301lie")
    assert repaired == "café and Amélie"
    assert report.normalized_nfc and not report.repaired


def test_macos_decomposed_accents_survive_double_encoding():
    repaired, report = repair_text(misdecode("cafe\u0301 nai\u0308ve", "mac_roman"))
    assert repaired == "café naïve"
    assert report.repaired and report.normalized_nfc


@pytest.mark.parametrize(
    ("data", "text", "encoding"),
    [
        (b"\xef\xbb\xbfhello", "hello", "utf-8-sig"),
        ("\ufeffпривет".encode("utf-16-le"), "привет", "utf-16-le"),
        ("\ufeffпривет".encode("utf-16-be"), "привет", "utf-16-be"),
        ("\ufeffпривет".encode("utf-32-le"), "привет", "utf-32-le"),
        ("\ufeffпривет".encode("utf-32-be"), "привет", "utf-32-be"),
        ("привет, café".encode(), "привет, café", "utf-8"),
        ("Привет, как дела? Всё хорошо.".encode("cp1251"), "Привет, как дела? Всё хорошо.", "cp1251"),
        ("Сон".encode("cp1251"), "Сон", "cp1251"),
        ("Le café est très naïf.".encode("cp1252"), "Le café est très naïf.", "cp1252"),
    ],
    ids=["utf8-bom", "utf16le", "utf16be", "utf32le", "utf32be", "utf8", "cp1251", "cp1251-short", "cp1252"],
)
def test_decode_bytes(data, text, encoding):
    assert decode_bytes(data, "f.txt") == (text, encoding)


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(1, 32)) * 20 + b"text", b"PK\x03\x04\x14\x00"],
    ids=["png", "control-heavy", "zip"],
)
def test_decode_bytes_rejects_binary(data):
    with pytest.raises(ParseError) as info:
        decode_bytes(data, "blob.txt")
    assert "blob.txt" in str(info.value) and "binary" in str(info.value)


def test_decode_bytes_rejects_a_broken_bom_file():
    with pytest.raises(ParseError, match="utf-16-be"):
        decode_bytes(b"\xfe\xff\xd8\x00", "f.txt")


def test_read_text_file_reports_the_source_encoding(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("Заметки: пульс 140–150, «лёгкий бег».\n".encode("cp1251"))
    text, report = read_text_file(path)
    assert text == "Заметки: пульс 140–150, «лёгкий бег».\n"
    assert report.source_encoding == "cp1251" and not report.repaired


def test_read_text_file_repairs_a_sample(tmp_path):
    path = tmp_path / "note.md"
    path.write_bytes(b"\xef\xbb\xbf" + SAMPLES[1].read_bytes())
    text, report = read_text_file(path)
    assert text == oracle(SAMPLES[1].read_text(encoding="utf-8"))
    assert report.source_encoding == "utf-8-sig" and report.codec == "mac_roman"


def test_read_text_file_errors_name_the_file(tmp_path):
    binary = tmp_path / "image.md"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ParseError, match="image.md: binary file, not text"):
        read_text_file(binary)
    with pytest.raises(ParseError, match="missing.md: cannot read"):
        read_text_file(tmp_path / "missing.md")
